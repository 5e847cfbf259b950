//! Merge benchmark: two 400x400 photo-like JPEGs decoded, joined side by side
//! and encoded at Q90, on one core, as in docs/DESIGN.md's reference figures
//! (the original's Pillow: about 6.6 ms a pair on this machine kind).
//!
//! `make bench` (or `cargo bench -p concat-service --bench merge`); prints the
//! median and the spread of per-pair times over several rounds, and the share
//! of decode, join and encode.

use std::time::{Duration, Instant};

use concat_service::merge;
use image::{Rgb, RgbImage};
use shared::config::OutputFormat;

const ROUNDS: usize = 7;
const PAIRS_PER_ROUND: usize = 40;

/// A deterministic photo-like image: smooth gradients, soft shapes and a
/// gentle texture, so the codecs do the work a photo asks of them (flat
/// colours would flatter them, per-pixel noise would punish them).
fn photo(seed: u32) -> RgbImage {
    let s = seed as f32;
    RgbImage::from_fn(400, 400, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        let wave = ((fx / 17.0 + s).sin() * (fy / 23.0).cos() * 40.0) as i32;
        let (dx, dy) = (fx - 200.0 - 40.0 * s, fy - 220.0);
        let disc = if dx * dx + dy * dy < 90.0 * 90.0 {
            60
        } else {
            0
        };
        let c = |base: i32| (base + wave + disc).clamp(0, 255) as u8;
        Rgb([
            c((fy * 0.5) as i32 + 40),
            c((fx * 0.3) as i32 + 60),
            c(220 - (fy * 0.4) as i32),
        ])
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let jpegs: Vec<Vec<u8>> = (0..2)
        .map(|i| {
            merge::encode(&photo(i), OutputFormat::Jpeg, 90)
                .expect("encoding input")
                .0
        })
        .collect();
    let (mut totals, mut decodes, mut joins, mut encodes) = (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        let (mut d, mut j, mut e) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let start = Instant::now();
        for _ in 0..PAIRS_PER_ROUND {
            let t = Instant::now();
            let parts: Vec<RgbImage> = jpegs
                .iter()
                .map(|b| merge::decode(b, "bench.jpg", 1 << 26).expect("decoding"))
                .collect();
            d += t.elapsed();
            let t = Instant::now();
            let joined = merge::join(&parts);
            j += t.elapsed();
            let t = Instant::now();
            let out = merge::encode(&joined, OutputFormat::Jpeg, 90).expect("encoding");
            e += t.elapsed();
            std::hint::black_box(out);
        }
        let per = |x: Duration| x / PAIRS_PER_ROUND as u32;
        totals.push(per(start.elapsed()));
        decodes.push(per(d));
        joins.push(per(j));
        encodes.push(per(e));
    }
    let (min, max) = (
        totals.iter().min().copied().unwrap_or_default(),
        totals.iter().max().copied().unwrap_or_default(),
    );
    println!(
        "merge 2x400x400 JPEG -> 800x400 JPEG Q90: median {:.2} ms/pair (min {:.2}, max {:.2}; {ROUNDS} rounds x {PAIRS_PER_ROUND} pairs) \
         = decode {:.2} + join {:.2} + encode {:.2}",
        ms(median(totals)),
        ms(min),
        ms(max),
        ms(median(decodes)),
        ms(median(joins)),
        ms(median(encodes)),
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
