//! Merging: decode each part, join them side by side, encode, store.
//!
//! The codec sits behind [`decode`] and [`encode`]: JPEG goes through
//! libjpeg-turbo (Debian's libturbojpeg, through the `turbojpeg` crate), about
//! four times faster than the `image` crate's encoder; every other format, and
//! JPEGs libjpeg-turbo cannot convert to RGB (CMYK), go through `image`. Everything here is
//! blocking CPU work: the Combiner runs it on the blocking pool, bounded by
//! `merge.workers`, where a panic comes back as an error.

use std::io::Cursor;

use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageReader, Rgb, RgbImage, Rgba};
use shared::config::{MergeSettings, OutputFormat};
use shared::error::MergeError;
use shared::ids::{ImageId, StoragePath, CONCAT_FOLDER};
use shared::image_kind::ImageKind;
use shared::storage::Storage;

/// Reads, merges and stores the parts of `id` (in source order); returns where
/// the merged image was written.
pub fn merge_parts(
    storage: &Storage,
    id: &ImageId,
    parts: &[StoragePath],
    settings: &MergeSettings,
) -> Result<StoragePath, MergeError> {
    if parts.is_empty() {
        return Err(MergeError::NoParts);
    }
    let mut images = Vec::with_capacity(parts.len());
    let mut all_jpeg = true;
    for path in parts {
        let bytes = storage.read(path).map_err(|e| match e {
            shared::error::StoreError::Io { source, .. } => MergeError::Read {
                path: path.to_string(),
                source,
            },
            other => MergeError::Store(other),
        })?;
        all_jpeg &= ImageKind::sniff(&bytes) == Some(ImageKind::Jpeg);
        images.push(decode(&bytes, path.as_str(), settings.max_part_pixels)?);
    }
    let joined = join(&images);
    let format = match settings.output_format {
        OutputFormat::Auto if all_jpeg => OutputFormat::Jpeg,
        OutputFormat::Auto => OutputFormat::Png,
        other => other,
    };
    let (bytes, ext) = encode(&joined, format, settings.jpeg_quality)?;
    let output =
        StoragePath::new(CONCAT_FOLDER, id, ext).map_err(shared::error::StoreError::from)?;
    storage.write_atomic(&output, &bytes)?;
    Ok(output)
}

/// Decodes one part into 8-bit sRGB: EXIF orientation applied; grey, palette,
/// 16-bit and CMYK converted; alpha composited over white; an animation gives
/// its first frame.
pub fn decode(bytes: &[u8], name: &str, max_pixels: u64) -> Result<RgbImage, MergeError> {
    if ImageKind::sniff(bytes) == Some(ImageKind::Jpeg) {
        if let Some(result) = decode_jpeg_turbo(bytes, name, max_pixels) {
            return result;
        }
    }
    let decode_error = |e: image::ImageError| MergeError::Decode {
        path: name.to_owned(),
        reason: e.to_string(),
    };
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| MergeError::Decode {
            path: name.to_owned(),
            reason: e.to_string(),
        })?;
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(MergeError::TooLarge {
            path: name.to_owned(),
            width,
            height,
            limit: max_pixels,
        });
    }
    let orientation = decoder.orientation().map_err(decode_error)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    image.apply_orientation(orientation);
    Ok(flatten(image))
}

/// libjpeg-turbo's decode, with the EXIF orientation read by `image`. None
/// when it cannot take this JPEG (CMYK, a header it refuses): the `image`
/// path then decodes it or says why it cannot.
fn decode_jpeg_turbo(
    bytes: &[u8],
    name: &str,
    max_pixels: u64,
) -> Option<Result<RgbImage, MergeError>> {
    let mut decompressor = turbojpeg::Decompressor::new().ok()?;
    let header = decompressor.read_header(bytes).ok()?;
    if matches!(
        header.colorspace,
        turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK
    ) {
        return None;
    }
    let (width, height) = (
        u32::try_from(header.width).ok()?,
        u32::try_from(header.height).ok()?,
    );
    if u64::from(width) * u64::from(height) > max_pixels {
        return Some(Err(MergeError::TooLarge {
            path: name.to_owned(),
            width,
            height,
            limit: max_pixels,
        }));
    }
    let mut pixels = vec![0u8; header.width * header.height * 3];
    let output = turbojpeg::Image {
        pixels: pixels.as_mut_slice(),
        width: header.width,
        pitch: header.width * 3,
        height: header.height,
        format: turbojpeg::PixelFormat::RGB,
    };
    decompressor.decompress(bytes, output).ok()?;
    let image = RgbImage::from_raw(width, height, pixels)?;
    let orientation = image::codecs::jpeg::JpegDecoder::new(Cursor::new(bytes))
        .and_then(|mut d| d.orientation())
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    if orientation == image::metadata::Orientation::NoTransforms {
        return Some(Ok(image));
    }
    let mut oriented = DynamicImage::ImageRgb8(image);
    oriented.apply_orientation(orientation);
    Some(Ok(oriented.into_rgb8()))
}

/// 8-bit RGB, with any alpha composited over white.
fn flatten(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba = image.into_rgba8();
    let mut out = RgbImage::new(rgba.width(), rgba.height());
    for (src, dst) in rgba.pixels().zip(out.pixels_mut()) {
        let Rgba([r, g, b, a]) = *src;
        let over =
            |c: u8| ((u16::from(c) * u16::from(a) + 255 * (255 - u16::from(a)) + 127) / 255) as u8;
        *dst = Rgb([over(r), over(g), over(b)]);
    }
    out
}

/// The size each part takes in the merged image: all at the shortest part's
/// height, widths scaled to keep each aspect ratio (never upscaled).
pub fn target_sizes(dims: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let Some(height) = dims.iter().map(|&(_, h)| h).min() else {
        return Vec::new();
    };
    dims.iter()
        .map(|&(w, h)| {
            if h == height {
                (w, h)
            } else {
                let scaled = (u64::from(w) * u64::from(height) + u64::from(h) / 2) / u64::from(h);
                (u32::try_from(scaled.max(1)).unwrap_or(u32::MAX), height)
            }
        })
        .collect()
}

/// Joins the images side by side, left to right, at a common height.
pub fn join(images: &[RgbImage]) -> RgbImage {
    let dims: Vec<(u32, u32)> = images.iter().map(|i| i.dimensions()).collect();
    let sizes = target_sizes(&dims);
    let width = sizes.iter().map(|&(w, _)| w).sum();
    let height = sizes.first().map_or(0, |&(_, h)| h);
    let mut out = RgbImage::new(width, height);
    let mut x = 0i64;
    for (image, &(w, h)) in images.iter().zip(&sizes) {
        if image.dimensions() == (w, h) {
            image::imageops::replace(&mut out, image, x, 0);
        } else {
            let resized = image::imageops::resize(image, w, h, FilterType::Triangle);
            image::imageops::replace(&mut out, &resized, x, 0);
        }
        x += i64::from(w);
    }
    out
}

/// Encodes the merged image; returns the bytes and the file extension.
pub fn encode(
    image: &RgbImage,
    format: OutputFormat,
    jpeg_quality: u8,
) -> Result<(Vec<u8>, &'static str), MergeError> {
    let mut out = Vec::new();
    let encode_error = |e: image::ImageError| MergeError::Encode(e.to_string());
    match format {
        OutputFormat::Jpeg => {
            let source = turbojpeg::Image {
                pixels: image.as_raw().as_slice(),
                width: image.width() as usize,
                pitch: image.width() as usize * 3,
                height: image.height() as usize,
                format: turbojpeg::PixelFormat::RGB,
            };
            match turbojpeg::compress(source, i32::from(jpeg_quality), turbojpeg::Subsamp::Sub2x2) {
                Ok(jpeg) => return Ok((jpeg.to_vec(), ImageKind::Jpeg.extension())),
                Err(e) => log::warn!("libjpeg-turbo could not encode ({e}); using the image crate"),
            }
            let encoder =
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, jpeg_quality);
            image.write_with_encoder(encoder).map_err(encode_error)?;
            Ok((out, ImageKind::Jpeg.extension()))
        }
        OutputFormat::Png | OutputFormat::Auto => {
            let encoder = image::codecs::png::PngEncoder::new(&mut out);
            image.write_with_encoder(encoder).map_err(encode_error)?;
            Ok((out, ImageKind::Png.extension()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_heights_keep_their_sizes() {
        assert_eq!(
            target_sizes(&[(400, 400), (300, 400)]),
            [(400, 400), (300, 400)]
        );
    }

    #[test]
    fn the_taller_part_is_scaled_down_keeping_its_aspect_ratio() {
        assert_eq!(
            target_sizes(&[(200, 100), (300, 300)]),
            [(200, 100), (100, 100)]
        );
        assert_eq!(
            target_sizes(&[(640, 480), (500, 333)]),
            [(444, 333), (500, 333)]
        );
        assert_eq!(
            target_sizes(&[(1, 1000), (10, 10)]),
            [(1, 10), (10, 10)],
            "never 0 wide"
        );
    }

    #[test]
    fn join_puts_the_first_part_on_the_left() {
        let red = RgbImage::from_pixel(4, 2, Rgb([255, 0, 0]));
        let blue = RgbImage::from_pixel(2, 4, Rgb([0, 0, 255]));
        let out = join(&[red, blue]);
        assert_eq!(out.dimensions(), (5, 2));
        assert_eq!(out.get_pixel(0, 0), &Rgb([255, 0, 0]));
        assert_eq!(out.get_pixel(3, 1), &Rgb([255, 0, 0]));
        assert_eq!(out.get_pixel(4, 0), &Rgb([0, 0, 255]));
    }

    #[test]
    fn alpha_goes_over_white_and_grey_becomes_rgb() {
        let mut rgba = image::RgbaImage::from_pixel(1, 1, Rgba([0, 0, 0, 0]));
        rgba.put_pixel(0, 0, Rgba([0, 0, 0, 0]));
        assert_eq!(
            flatten(DynamicImage::ImageRgba8(rgba)).get_pixel(0, 0),
            &Rgb([255, 255, 255])
        );
        let half = image::RgbaImage::from_pixel(1, 1, Rgba([0, 0, 0, 128]));
        assert_eq!(
            flatten(DynamicImage::ImageRgba8(half)).get_pixel(0, 0),
            &Rgb([127, 127, 127])
        );
        let grey = image::GrayImage::from_pixel(1, 1, image::Luma([9]));
        assert_eq!(
            flatten(DynamicImage::ImageLuma8(grey)).get_pixel(0, 0),
            &Rgb([9, 9, 9])
        );
    }

    #[test]
    fn undecodable_and_oversized_parts_are_refused_with_their_name() {
        let err = decode(b"not an image", "a/1.jpg", 1 << 20).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("part a/1.jpg cannot be decoded"),
            "{err}"
        );
        assert!(!err.is_retryable());
        let (png, _) = encode(&RgbImage::new(20, 10), OutputFormat::Png, 90).unwrap();
        let err = decode(&png, "a/2.png", 100).unwrap_err();
        assert_eq!(
            err.to_string(),
            "part a/2.png is 20x10, over the limit of 100 pixels"
        );
    }

    #[test]
    fn jpeg_goes_through_libjpeg_turbo_and_back() {
        let img = RgbImage::from_fn(64, 32, |x, _| {
            if x < 32 {
                Rgb([200, 30, 30])
            } else {
                Rgb([30, 30, 200])
            }
        });
        let (jpeg, ext) = encode(&img, OutputFormat::Jpeg, 90).unwrap();
        assert_eq!(ext, "jpg");
        assert!(
            decode_jpeg_turbo(&jpeg, "t.jpg", 1 << 20).is_some(),
            "the fast path takes it"
        );
        let back = decode(&jpeg, "t.jpg", 1 << 20).unwrap();
        assert_eq!(back.dimensions(), (64, 32));
        let (l, r) = (back.get_pixel(8, 16), back.get_pixel(56, 16));
        assert!(
            l[0] > 180 && l[2] < 60 && r[2] > 180 && r[0] < 60,
            "{l:?} {r:?}"
        );
        let err = decode(&jpeg, "t.jpg", 100).unwrap_err();
        assert_eq!(
            err.to_string(),
            "part t.jpg is 64x32, over the limit of 100 pixels"
        );
    }

    #[test]
    fn a_grey_jpeg_decodes_to_rgb() {
        let grey = image::GrayImage::from_pixel(16, 16, image::Luma([77]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .encode_image(&grey)
            .unwrap();
        let out = decode(&jpeg, "g.jpg", 1 << 20).unwrap();
        let p = out.get_pixel(8, 8);
        assert!(p.0.iter().all(|c| c.abs_diff(77) <= 2), "{p:?}");
    }

    #[test]
    fn exif_orientation_is_applied() {
        // A 2x1 JPEG (red, blue) tagged "rotate 90° clockwise" must come out 1x2.
        let mut img = RgbImage::new(16, 8);
        for (x, _, p) in img.enumerate_pixels_mut() {
            *p = if x < 8 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            };
        }
        let (jpeg, _) = encode(&img, OutputFormat::Jpeg, 95).unwrap();
        let tagged = with_exif_orientation(&jpeg, 6);
        let out = decode(&tagged, "t.jpg", 1 << 20).unwrap();
        assert_eq!(out.dimensions(), (8, 16));
        let top = out.get_pixel(4, 2);
        let bottom = out.get_pixel(4, 13);
        assert!(top[0] > 200 && top[2] < 60, "top is red: {top:?}");
        assert!(
            bottom[2] > 200 && bottom[0] < 60,
            "bottom is blue: {bottom:?}"
        );
    }

    /// Inserts an APP1 EXIF segment with one Orientation tag after SOI.
    fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = Vec::new();
        tiff.extend_from_slice(b"MM\0\x2a\0\0\0\x08"); // big-endian, IFD at 8
        tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_be_bytes()); // count
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0]);
        tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }
}
