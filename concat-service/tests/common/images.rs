//! Generated test images: four flat quadrants of known colours, so a merged
//! image can be checked against the colours without trusting the merge code.

use image::{Rgb, RgbImage, Rgba, RgbaImage};

/// How a sample is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    /// PNG with an alpha channel whose top-right quadrant is fully transparent
    /// (so it must come out white).
    PngTransparentCorner,
}

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub width: u32,
    pub height: u32,
    /// Top-left, top-right, bottom-left, bottom-right.
    pub colors: [[u8; 3]; 4],
    pub format: Format,
}

pub const WHITE: [u8; 3] = [255, 255, 255];

impl Sample {
    pub fn new(width: u32, height: u32, seed: u32, format: Format) -> Self {
        // Well separated, saturated colours, different per seed.
        let palette: [[u8; 3]; 8] = [
            [220, 30, 30],
            [30, 180, 40],
            [40, 60, 220],
            [240, 200, 20],
            [160, 40, 200],
            [20, 200, 200],
            [240, 120, 20],
            [60, 60, 60],
        ];
        let pick = |k: u32| palette[((seed + k * 3) % 8) as usize];
        Self {
            width,
            height,
            colors: [pick(0), pick(1), pick(2), pick(3)],
            format,
        }
    }

    /// The colour expected in quadrant `q` after merging.
    pub fn expected(&self, q: usize) -> [u8; 3] {
        if self.format == Format::PngTransparentCorner && q == 1 {
            WHITE
        } else {
            self.colors[q]
        }
    }

    pub fn render(&self) -> RgbaImage {
        RgbaImage::from_fn(self.width, self.height, |x, y| {
            let q = usize::from(x >= self.width / 2) + 2 * usize::from(y >= self.height / 2);
            let [r, g, b] = self.colors[q];
            let a = if self.format == Format::PngTransparentCorner && q == 1 {
                0
            } else {
                255
            };
            Rgba([r, g, b, a])
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        let rgba = self.render();
        match self.format {
            Format::Jpeg => {
                let rgb = image::DynamicImage::ImageRgba8(rgba).into_rgb8();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
                    .encode_image(&rgb)
                    .expect("encoding a test JPEG");
            }
            Format::Png => image::DynamicImage::ImageRgba8(rgba)
                .into_rgb8()
                .write_to(&mut out, image::ImageFormat::Png)
                .expect("encoding a test PNG"),
            Format::PngTransparentCorner => rgba
                .write_to(&mut out, image::ImageFormat::Png)
                .expect("encoding a test PNG"),
        }
        out.into_inner()
    }

    pub fn extension(&self) -> &'static str {
        match self.format {
            Format::Jpeg => "jpg",
            Format::Png | Format::PngTransparentCorner => "png",
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self.format {
            Format::Jpeg => "image/jpeg",
            Format::Png | Format::PngTransparentCorner => "image/png",
        }
    }
}

/// Checks that the part drawn at `x0..x0+w` of `merged` (full height) shows
/// the sample's four quadrants, sampling the middle of each quadrant.
pub fn check_part(
    merged: &RgbImage,
    x0: u32,
    w: u32,
    sample: &Sample,
    tolerance: u8,
) -> Result<(), String> {
    let h = merged.height();
    for q in 0..4 {
        let qx = x0 + if q % 2 == 0 { w / 4 } else { 3 * w / 4 };
        let qy = if q < 2 { h / 4 } else { 3 * h / 4 };
        let Rgb(got) = *merged.get_pixel(qx, qy);
        let want = sample.expected(q);
        let off = got
            .iter()
            .zip(want)
            .map(|(g, w)| g.abs_diff(w))
            .max()
            .unwrap_or(0);
        if off > tolerance {
            return Err(format!(
                "quadrant {q} at ({qx},{qy}): got {got:?}, want {want:?} (off by {off} > {tolerance})"
            ));
        }
    }
    Ok(())
}
