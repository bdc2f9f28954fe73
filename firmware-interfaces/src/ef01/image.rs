//! Fingerprint images as uploaded by UpImage: 256 × 288, 4 bits per pixel, high nibble
//! first (R30x/ZFM optical modules; capacitive modules may differ).

use zeroize::Zeroizing;

pub const IMAGE_WIDTH: usize = 256;
pub const IMAGE_HEIGHT: usize = 288;
/// Bytes on the wire: two pixels per byte.
pub const IMAGE_BYTES: usize = IMAGE_WIDTH * IMAGE_HEIGHT / 2;

/// An 8-bit greyscale image (wiped on drop).
#[derive(Clone, PartialEq, Eq)]
pub struct FingerImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for FingerImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FingerImage({}x{})", self.width, self.height)
    }
}

impl FingerImage {
    /// Unpacks the 4-bit stream (nibble × 17 gives 8-bit grey). `None` unless exactly
    /// [`IMAGE_BYTES`] bytes.
    pub fn unpack(packed: &[u8]) -> Option<Self> {
        if packed.len() != IMAGE_BYTES {
            return None;
        }
        let mut pixels = Zeroizing::new(Vec::with_capacity(IMAGE_WIDTH * IMAGE_HEIGHT));
        for b in packed {
            pixels.push((b >> 4) * 17);
            pixels.push((b & 0x0F) * 17);
        }
        Some(Self {
            width: IMAGE_WIDTH,
            height: IMAGE_HEIGHT,
            pixels,
        })
    }

    /// Packs to the wire form (pixels quantised to 4 bits).
    pub fn pack(&self) -> Vec<u8> {
        self.pixels
            .chunks(2)
            .map(|p| {
                (p.first().copied().unwrap_or(0) / 17) << 4 | (p.get(1).copied().unwrap_or(0) / 17)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nibbles_unpack_high_first_and_round_trip() {
        let mut packed = vec![0u8; IMAGE_BYTES];
        packed[0] = 0xF1;
        let img = FingerImage::unpack(&packed).expect("size");
        assert_eq!(&img.pixels[..3], &[255, 17, 0]);
        assert_eq!(img.pack(), packed);
        assert!(FingerImage::unpack(&packed[1..]).is_none());
    }
}
