//! ADM's `center_crop_arr`, as the reference trains with (`lightgen.md` §2.1): halve with a
//! box filter while the short side is at least twice the target, resize the short side to the
//! target with bicubic (Catmull-Rom, PIL's BICUBIC), then crop the centre.

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

pub(crate) fn resize(img: &RgbImage, w: u32, h: u32, filter: FilterType) -> Result<RgbImage, String> {
    let src = Image::from_vec_u8(img.width(), img.height(), img.as_raw().clone(), PixelType::U8x3)
        .map_err(|e| e.to_string())?;
    let mut dst = Image::new(w, h, PixelType::U8x3);
    Resizer::new()
        .resize(&src, &mut dst, &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(filter)))
        .map_err(|e| e.to_string())?;
    RgbImage::from_raw(w, h, dst.into_vec()).ok_or_else(|| "resize produced a short buffer".to_string())
}

/// The `size`×`size` centre crop of `img`, ADM style. An image already that size is returned as is.
pub fn center_crop(img: &RgbImage, size: u32) -> Result<RgbImage, String> {
    if img.width() == size && img.height() == size {
        return Ok(img.clone());
    }
    let mut cur = img.clone();
    while cur.width().min(cur.height()) >= 2 * size {
        cur = resize(&cur, cur.width() / 2, cur.height() / 2, FilterType::Box)?;
    }
    let scale = size as f64 / cur.width().min(cur.height()) as f64;
    let (w, h) = ((cur.width() as f64 * scale).round() as u32, (cur.height() as f64 * scale).round() as u32);
    if (w, h) != cur.dimensions() {
        cur = resize(&cur, w.max(size), h.max(size), FilterType::CatmullRom)?;
    }
    let (x, y) = ((cur.width() - size) / 2, (cur.height() - size) / 2);
    Ok(image::imageops::crop_imm(&cur, x, y, size, size).to_image())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_size_is_untouched_and_others_are_cropped_from_the_centre() {
        let img = RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8, y as u8, 7]));
        assert_eq!(center_crop(&img, 64).unwrap(), img);
        // 64x32 → 32x32: no resize (short side already 32), the centre columns 16..48.
        let wide = RgbImage::from_fn(64, 32, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let c = center_crop(&wide, 32).unwrap();
        assert_eq!(c.dimensions(), (32, 32));
        assert_eq!(c.get_pixel(0, 0).0[0], 16);
        // 256x128 → 64: one box halving (128x64), then a centre crop.
        let big = RgbImage::from_fn(256, 128, |x, _| image::Rgb([(x / 2) as u8, 0, 0]));
        let c = center_crop(&big, 64).unwrap();
        assert_eq!(c.dimensions(), (64, 64));
        assert!((c.get_pixel(0, 10).0[0] as i32 - 32).abs() <= 1, "{:?}", c.get_pixel(0, 10));
    }
}
