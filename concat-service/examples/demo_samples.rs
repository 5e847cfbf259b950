//! Generates the demo's sample images and the two source CSVs (original
//! format) pointing at a local HTTP server.
//!
//! `demo_samples <out-dir> <base-url> <count>` writes
//! `<out-dir>/samples/{super_heros,alter_egos}/<id>.<ext>` and
//! `<out-dir>/input/{super_heros,alter_egos}.csv`.

#[path = "../tests/common/images.rs"]
#[allow(dead_code)]
mod images;

use std::path::PathBuf;

use anyhow::Context as _;
use images::{Format, Sample};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: demo_samples <out-dir> <base-url> <count>";
    let out = PathBuf::from(args.next().context(usage)?);
    let base = args.next().context(usage)?;
    let count: u32 = args
        .next()
        .context(usage)?
        .parse()
        .context("count is a number")?;
    for source in ["super_heros", "alter_egos"] {
        std::fs::create_dir_all(out.join("samples").join(source))?;
    }
    std::fs::create_dir_all(out.join("input"))?;
    let mut csv = [String::from("id,path,"), String::from("id,path,")];
    for id in 1..=count {
        // Heroes are 320x240 JPEGs; their alter egos vary in height and every
        // third one is a PNG with a transparent corner (it comes out white).
        let hero = Sample::new(320, 240, id, Format::Jpeg);
        let ego_format = if id % 3 == 0 {
            Format::PngTransparentCorner
        } else {
            Format::Jpeg
        };
        let ego = Sample::new(200 + 20 * (id % 4), 180 + 40 * (id % 3), id + 4, ego_format);
        for (i, (source, sample)) in [("super_heros", hero), ("alter_egos", ego)]
            .into_iter()
            .enumerate()
        {
            let name = format!("{id}.{}", sample.extension());
            std::fs::write(
                out.join("samples").join(source).join(&name),
                sample.encode(),
            )?;
            csv[i].push_str(&format!("\n{id},{base}/{source}/{name},"));
        }
    }
    // The original files have no final newline.
    std::fs::write(out.join("input/super_heros.csv"), &csv[0])?;
    std::fs::write(out.join("input/alter_egos.csv"), &csv[1])?;
    println!("{count} sample pairs in {}", out.display());
    Ok(())
}
