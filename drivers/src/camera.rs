//! Cameras: the [`Camera`] trait over a [`FrameSource`], and a face-capture step that picks
//! the best of N frames. Frames stay in memory (wiped on drop); nothing is written to disk.
//!
//! Face detection is behind [`FaceDetector`]. The built-in [`ContrastBlobDetector`] finds
//! face-sized regions that stand out from the background — enough for the synthetic camera
//! of the embedded default and for tests, not for production; a model-based detector (e.g.
//! SeetaFace via the `rustface` crate, which ships its model) plugs in through the same trait.
//!
//! Quality checks ("OFIQ-inspired", not conformant), each documented on [`QualityLimits`]:
//! exactly one face; face size and centring; exposure (mean luminance and clipping inside
//! the face); sharpness (variance of the Laplacian inside the face). The best frame passing
//! every check wins; its score favours sharpness and well-centred, well-exposed faces.

use std::collections::VecDeque;

use async_trait::async_trait;
use zeroize::Zeroizing;

/// An 8-bit greyscale frame (luma), row-major.
#[derive(Clone)]
pub struct Frame {
    pub width: usize,
    pub height: usize,
    pub luma: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({}x{})", self.width, self.height)
    }
}

impl Frame {
    /// `None` unless `luma.len() == width * height`.
    pub fn new(width: usize, height: usize, luma: Vec<u8>) -> Option<Self> {
        (width.checked_mul(height) == Some(luma.len())).then(|| Self {
            width,
            height,
            luma: Zeroizing::new(luma),
        })
    }

    fn at(&self, x: usize, y: usize) -> u8 {
        self.luma.get(y * self.width + x).copied().unwrap_or(0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    #[error("no frame within {0} ms")]
    Timeout(u64),
    #[error("the camera went away: {0}")]
    DeviceGone(String),
    #[error("the frame source is exhausted")]
    Exhausted,
    #[error("no acceptable face in {frames} frames (best frame: {reason})")]
    NoAcceptableFace { frames: usize, reason: Rejection },
    #[error("unsupported frame format: {0}")]
    Format(String),
}

/// Where frames come from (V4L2 device, fixtures, synthetic generator).
#[async_trait]
pub trait FrameSource: Send {
    async fn next_frame(&mut self) -> Result<Frame, CameraError>;
}

/// Replays a fixed list of frames in order, then reports [`CameraError::Exhausted`]
/// (or cycles when `repeat`). Used for fixtures and the synthetic camera.
pub struct FixtureSource {
    frames: VecDeque<Frame>,
    repeat: bool,
}

impl FixtureSource {
    pub fn new(frames: Vec<Frame>, repeat: bool) -> Self {
        Self {
            frames: frames.into(),
            repeat,
        }
    }

    /// The frames of `dir`: every `*.pgm` file (binary greyscale, `P5`, 8-bit) in file-name
    /// order, repeated. A directory without one, or a file that is not such a PGM, is an
    /// error naming the file.
    pub fn from_dir(dir: &std::path::Path) -> Result<Self, CameraError> {
        let unreadable = |what: &std::path::Path, e: std::io::Error| {
            CameraError::Format(format!("{}: {e}", what.display()))
        };
        let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| unreadable(dir, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("pgm")))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(CameraError::Format(format!(
                "{}: no .pgm frames (binary greyscale P5, 8-bit)",
                dir.display()
            )));
        }
        let frames = paths
            .iter()
            .map(|p| {
                let bytes = std::fs::read(p).map_err(|e| unreadable(p, e))?;
                parse_pgm(&bytes).ok_or_else(|| {
                    CameraError::Format(format!(
                        "{}: not a binary 8-bit greyscale PGM (P5)",
                        p.display()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(frames, true))
    }

    /// The embedded default: a well-lit synthetic face, repeated.
    pub fn synthetic() -> Self {
        Self::new(
            vec![synthetic::face_frame(synthetic::Scene::default())],
            true,
        )
    }
}

#[async_trait]
impl FrameSource for FixtureSource {
    async fn next_frame(&mut self) -> Result<Frame, CameraError> {
        let frame = self.frames.pop_front().ok_or(CameraError::Exhausted)?;
        if self.repeat {
            self.frames.push_back(frame.clone());
        }
        Ok(frame)
    }
}

/// A binary PGM (`P5 <width> <height> <maxval ≤ 255>` then width × height bytes; `#`
/// comments in the header), as fixture cameras and test captures store frames.
pub fn parse_pgm(bytes: &[u8]) -> Option<Frame> {
    let mut pos = 0;
    let mut field = || -> Option<&[u8]> {
        loop {
            while bytes.get(pos)?.is_ascii_whitespace() {
                pos += 1;
            }
            if *bytes.get(pos)? == b'#' {
                while *bytes.get(pos)? != b'\n' {
                    pos += 1;
                }
                continue;
            }
            let start = pos;
            while !bytes.get(pos)?.is_ascii_whitespace() {
                pos += 1;
            }
            return bytes.get(start..pos);
        }
    };
    let number = |f: &[u8]| std::str::from_utf8(f).ok()?.parse::<usize>().ok();
    if field()? != b"P5" {
        return None;
    }
    let width = number(field()?)?;
    let height = number(field()?)?;
    let maxval = number(field()?)?;
    if !(1..=255).contains(&maxval) {
        return None;
    }
    // Exactly one whitespace byte separates the header from the pixels.
    let pixels = bytes.get(pos + 1..)?;
    let len = width.checked_mul(height)?;
    Frame::new(width, height, pixels.get(..len)?.to_vec())
}

/// A face found in a frame (pixel box).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaceBox {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

pub trait FaceDetector: Send + Sync {
    fn detect(&self, frame: &Frame) -> Vec<FaceBox>;
}

/// Finds connected regions differing from the background (median of the border pixels) by
/// more than `min_contrast`, at least `min_area_fraction` of the frame. Bounded work:
/// one pass plus a flood fill over a visited map.
#[derive(Debug, Clone, Copy)]
pub struct ContrastBlobDetector {
    pub min_contrast: u8,
    pub min_area_fraction: f32,
}

impl Default for ContrastBlobDetector {
    fn default() -> Self {
        Self {
            min_contrast: 20,
            min_area_fraction: 0.01,
        }
    }
}

impl FaceDetector for ContrastBlobDetector {
    fn detect(&self, frame: &Frame) -> Vec<FaceBox> {
        let (w, h) = (frame.width, frame.height);
        if w < 3 || h < 3 {
            return Vec::new();
        }
        let mut border: Vec<u8> = (0..w)
            .flat_map(|x| [frame.at(x, 0), frame.at(x, h - 1)])
            .collect();
        border.extend((0..h).flat_map(|y| [frame.at(0, y), frame.at(w - 1, y)]));
        border.sort_unstable();
        let background = border.get(border.len() / 2).copied().unwrap_or(0);
        let fg = |x: usize, y: usize| frame.at(x, y).abs_diff(background) > self.min_contrast;
        let min_area = (self.min_area_fraction * (w * h) as f32) as usize;
        let mut seen = vec![false; w * h];
        let mut faces = Vec::new();
        let mut stack = Vec::new();
        for start in 0..w * h {
            let (sx, sy) = (start % w, start / w);
            if seen[start] || !fg(sx, sy) {
                continue;
            }
            seen[start] = true;
            stack.push(start);
            let (mut x0, mut y0, mut x1, mut y1, mut area) = (sx, sy, sx, sy, 0usize);
            while let Some(i) = stack.pop() {
                let (x, y) = (i % w, i / w);
                area += 1;
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
                let neighbours = [
                    (x.wrapping_sub(1), y),
                    (x + 1, y),
                    (x, y.wrapping_sub(1)),
                    (x, y + 1),
                ];
                for (nx, ny) in neighbours {
                    if nx < w && ny < h && !seen[ny * w + nx] && fg(nx, ny) {
                        seen[ny * w + nx] = true;
                        stack.push(ny * w + nx);
                    }
                }
            }
            if area >= min_area {
                faces.push(FaceBox {
                    x: x0,
                    y: y0,
                    width: x1 - x0 + 1,
                    height: y1 - y0 + 1,
                });
            }
        }
        faces
    }
}

/// Thresholds of the quality checks.
#[derive(Debug, Clone, Copy)]
pub struct QualityLimits {
    /// Face width as a fraction of the frame width: not too far, not too close.
    pub min_face_width: f32,
    pub max_face_width: f32,
    /// Largest distance of the face centre from the frame centre, as a fraction of the
    /// frame's width/height.
    pub max_centre_offset: f32,
    /// Mean luminance inside the face box.
    pub min_mean_luma: f32,
    pub max_mean_luma: f32,
    /// Largest fraction of clipped pixels (≤ 5 or ≥ 250) inside the face box.
    pub max_clipped: f32,
    /// Smallest variance of the 4-neighbour Laplacian inside the face box.
    pub min_sharpness: f32,
}

impl Default for QualityLimits {
    fn default() -> Self {
        Self {
            min_face_width: 0.2,
            max_face_width: 0.8,
            max_centre_offset: 0.2,
            min_mean_luma: 70.0,
            max_mean_luma: 210.0,
            max_clipped: 0.1,
            min_sharpness: 100.0,
        }
    }
}

/// Why a frame was not acceptable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rejection {
    NoFace,
    SeveralFaces(usize),
    FaceTooSmall,
    FaceTooLarge,
    NotCentred,
    TooDark(f32),
    TooBright(f32),
    Clipped(f32),
    Blurred(f32),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoFace => f.write_str("no face"),
            Self::SeveralFaces(n) => write!(f, "{n} faces"),
            Self::FaceTooSmall => f.write_str("face too small"),
            Self::FaceTooLarge => f.write_str("face too large"),
            Self::NotCentred => f.write_str("face not centred"),
            Self::TooDark(m) => write!(f, "too dark (mean {m:.0})"),
            Self::TooBright(m) => write!(f, "too bright (mean {m:.0})"),
            Self::Clipped(c) => write!(f, "{:.0}% clipped", c * 100.0),
            Self::Blurred(s) => write!(f, "blurred (sharpness {s:.0})"),
        }
    }
}

/// The measurements of one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameQuality {
    pub face: FaceBox,
    pub mean_luma: f32,
    pub clipped: f32,
    pub sharpness: f32,
    pub centre_offset: f32,
    /// Higher is better; comparable between frames of one capture.
    pub score: f32,
}

/// Measures `frame` and applies `limits`.
pub fn assess(
    frame: &Frame,
    detector: &dyn FaceDetector,
    limits: &QualityLimits,
) -> Result<FrameQuality, Rejection> {
    let faces = detector.detect(frame);
    let face = match faces.as_slice() {
        [] => return Err(Rejection::NoFace),
        [one] => *one,
        many => return Err(Rejection::SeveralFaces(many.len())),
    };
    let width_fraction = face.width as f32 / frame.width as f32;
    if width_fraction < limits.min_face_width {
        return Err(Rejection::FaceTooSmall);
    }
    if width_fraction > limits.max_face_width {
        return Err(Rejection::FaceTooLarge);
    }
    let cx = (face.x as f32 + face.width as f32 / 2.0) / frame.width as f32 - 0.5;
    let cy = (face.y as f32 + face.height as f32 / 2.0) / frame.height as f32 - 0.5;
    let centre_offset = cx.abs().max(cy.abs());
    if centre_offset > limits.max_centre_offset {
        return Err(Rejection::NotCentred);
    }
    let (mut sum, mut clipped, mut n) = (0u64, 0u64, 0u64);
    let (mut lap_sum, mut lap_sq, mut lap_n) = (0f64, 0f64, 0f64);
    for y in face.y..face.y + face.height {
        for x in face.x..face.x + face.width {
            let v = frame.at(x, y);
            sum += u64::from(v);
            clipped += u64::from(v <= 5 || v >= 250);
            n += 1;
            if x > 0 && y > 0 && x + 1 < frame.width && y + 1 < frame.height {
                let lap = 4.0 * f64::from(v)
                    - f64::from(frame.at(x - 1, y))
                    - f64::from(frame.at(x + 1, y))
                    - f64::from(frame.at(x, y - 1))
                    - f64::from(frame.at(x, y + 1));
                lap_sum += lap;
                lap_sq += lap * lap;
                lap_n += 1.0;
            }
        }
    }
    let mean_luma = sum as f32 / n.max(1) as f32;
    let clipped = clipped as f32 / n.max(1) as f32;
    let sharpness = if lap_n > 0.0 {
        (lap_sq / lap_n - (lap_sum / lap_n).powi(2)) as f32
    } else {
        0.0
    };
    if mean_luma < limits.min_mean_luma {
        return Err(Rejection::TooDark(mean_luma));
    }
    if mean_luma > limits.max_mean_luma {
        return Err(Rejection::TooBright(mean_luma));
    }
    if clipped > limits.max_clipped {
        return Err(Rejection::Clipped(clipped));
    }
    if sharpness < limits.min_sharpness {
        return Err(Rejection::Blurred(sharpness));
    }
    let exposure = 1.0 - ((mean_luma - 128.0).abs() / 128.0);
    let score = sharpness.ln_1p() * (1.0 - centre_offset) * exposure;
    Ok(FrameQuality {
        face,
        mean_luma,
        clipped,
        sharpness,
        centre_offset,
        score,
    })
}

/// The chosen frame of a face capture (kept in memory only).
#[derive(Debug, Clone)]
pub struct FaceCapture {
    pub frame: Frame,
    pub quality: FrameQuality,
    /// Index of the chosen frame among those considered.
    pub index: usize,
}

/// What the daemon needs from a camera.
#[async_trait]
pub trait Camera: Send {
    /// Looks at `frames` frames and returns the best acceptable face.
    async fn capture_face(&mut self, frames: usize) -> Result<FaceCapture, CameraError>;
}

/// A camera made of a frame source, a face detector and quality limits.
pub struct FaceCamera<S: FrameSource> {
    pub source: S,
    pub detector: Box<dyn FaceDetector>,
    pub limits: QualityLimits,
}

impl<S: FrameSource> FaceCamera<S> {
    pub fn new(source: S) -> Self {
        Self {
            source,
            detector: Box::new(ContrastBlobDetector::default()),
            limits: QualityLimits::default(),
        }
    }
}

#[async_trait]
impl<S: FrameSource> Camera for FaceCamera<S> {
    async fn capture_face(&mut self, frames: usize) -> Result<FaceCapture, CameraError> {
        let mut best: Option<FaceCapture> = None;
        let mut last_rejection = Rejection::NoFace;
        let mut considered = 0;
        for index in 0..frames {
            let frame = match self.source.next_frame().await {
                Ok(f) => f,
                Err(CameraError::Exhausted) if considered > 0 => break,
                Err(e) => return Err(e),
            };
            considered += 1;
            match assess(&frame, self.detector.as_ref(), &self.limits) {
                Ok(quality)
                    if best
                        .as_ref()
                        .is_none_or(|b| quality.score > b.quality.score) =>
                {
                    best = Some(FaceCapture {
                        frame,
                        quality,
                        index,
                    });
                }
                Ok(_) => {}
                Err(r) => last_rejection = r,
            }
        }
        best.ok_or(CameraError::NoAcceptableFace {
            frames: considered,
            reason: last_rejection,
        })
    }
}

/// Synthetic frames: faces drawn as textured ellipses with eyes and mouth on a plain
/// background, and the degradations the quality checks must catch.
pub mod synthetic {
    use super::Frame;

    #[derive(Debug, Clone, Copy)]
    pub struct Scene {
        pub width: usize,
        pub height: usize,
        pub background: u8,
        /// Face centres as fractions of the frame, and face width fraction.
        pub faces: &'static [(f32, f32)],
        pub face_width: f32,
    }

    impl Default for Scene {
        fn default() -> Self {
            Self {
                width: 160,
                height: 120,
                background: 40,
                faces: &[(0.5, 0.5)],
                face_width: 0.4,
            }
        }
    }

    pub fn face_frame(scene: Scene) -> Frame {
        let (w, h) = (scene.width, scene.height);
        let mut luma = vec![scene.background; w * h];
        let rx = scene.face_width * w as f32 / 2.0;
        let ry = rx * 1.25;
        for &(fx, fy) in scene.faces {
            let (cx, cy) = (fx * w as f32, fy * h as f32);
            for y in 0..h {
                for x in 0..w {
                    let (dx, dy) = ((x as f32 - cx) / rx, (y as f32 - cy) / ry);
                    if dx * dx + dy * dy > 1.0 {
                        continue;
                    }
                    // Skin with fine texture (what a sharp lens resolves).
                    let mut v: u8 = if (x + y) % 2 == 0 { 150 } else { 185 };
                    let eye =
                        |ex: f32| ((dx - ex) / 0.18).powi(2) + ((dy + 0.25) / 0.1).powi(2) <= 1.0;
                    if eye(-0.4) || eye(0.4) {
                        v = 70;
                    }
                    if (dx / 0.4).powi(2) + ((dy - 0.45) / 0.08).powi(2) <= 1.0 {
                        v = 90;
                    }
                    if let Some(p) = luma.get_mut(y * w + x) {
                        *p = v;
                    }
                }
            }
        }
        Frame::new(w, h, luma).unwrap_or_else(|| unreachable!("sized above"))
    }

    /// Box blur with radius `r` (defocus).
    pub fn blurred(frame: &Frame, r: usize) -> Frame {
        let (w, h) = (frame.width, frame.height);
        let mut out = vec![0u8; w * h];
        for y in 0..h {
            for x in 0..w {
                let (mut s, mut n) = (0u32, 0u32);
                for yy in y.saturating_sub(r)..(y + r + 1).min(h) {
                    for xx in x.saturating_sub(r)..(x + r + 1).min(w) {
                        s += u32::from(frame.at(xx, yy));
                        n += 1;
                    }
                }
                if let Some(p) = out.get_mut(y * w + x) {
                    *p = (s / n.max(1)) as u8;
                }
            }
        }
        Frame::new(w, h, out).unwrap_or_else(|| unreachable!("same size"))
    }

    /// Scales the luminance (under-exposure for `factor < 1`).
    pub fn exposed(frame: &Frame, factor: f32) -> Frame {
        let out = frame
            .luma
            .iter()
            .map(|&v| (f32::from(v) * factor).clamp(0.0, 255.0) as u8)
            .collect();
        Frame::new(frame.width, frame.height, out).unwrap_or_else(|| unreachable!("same size"))
    }
}

#[cfg(test)]
mod tests {
    use super::synthetic::{Scene, blurred, exposed, face_frame};
    use super::*;

    fn limits_and_detector() -> (QualityLimits, ContrastBlobDetector) {
        (QualityLimits::default(), ContrastBlobDetector::default())
    }

    #[test]
    fn each_check_rejects_its_degradation() {
        let (l, d) = limits_and_detector();
        let good = face_frame(Scene::default());
        assert!(assess(&good, &d, &l).is_ok());
        assert!(matches!(
            assess(&blurred(&good, 2), &d, &l),
            Err(Rejection::Blurred(_))
        ));
        assert!(matches!(
            assess(&exposed(&good, 0.3), &d, &l),
            Err(Rejection::TooDark(_))
        ));
        let two = face_frame(Scene {
            faces: &[(0.28, 0.5), (0.72, 0.5)],
            face_width: 0.3,
            ..Scene::default()
        });
        assert_eq!(assess(&two, &d, &l), Err(Rejection::SeveralFaces(2)));
        let small = face_frame(Scene {
            face_width: 0.12,
            ..Scene::default()
        });
        assert_eq!(assess(&small, &d, &l), Err(Rejection::FaceTooSmall));
        let off = face_frame(Scene {
            faces: &[(0.8, 0.5)],
            face_width: 0.3,
            ..Scene::default()
        });
        assert_eq!(assess(&off, &d, &l), Err(Rejection::NotCentred));
        let empty = Frame::new(160, 120, vec![40; 160 * 120]).expect("sized");
        assert_eq!(assess(&empty, &d, &l), Err(Rejection::NoFace));
    }

    #[tokio::test]
    async fn the_well_lit_face_is_chosen_over_blurred_dark_and_two_face_frames() {
        let good = face_frame(Scene::default());
        let two = face_frame(Scene {
            faces: &[(0.28, 0.5), (0.72, 0.5)],
            face_width: 0.3,
            ..Scene::default()
        });
        let frames = vec![blurred(&good, 2), exposed(&good, 0.3), good.clone(), two];
        let mut camera = FaceCamera::new(FixtureSource::new(frames, false));
        let capture = camera.capture_face(4).await.expect("a face");
        assert_eq!(capture.index, 2);
        assert_eq!(*capture.frame.luma, *good.luma);
    }

    fn pgm(frame: &Frame) -> Vec<u8> {
        let mut bytes =
            format!("P5\n# fixture\n{} {}\n255\n", frame.width, frame.height).into_bytes();
        bytes.extend_from_slice(&frame.luma);
        bytes
    }

    /// `devices.camera.mode = "fixture"` (kioskd refused it before): frames from a directory
    /// of PGM files go through the real quality pick, in file-name order.
    #[tokio::test]
    async fn fixture_frames_from_a_directory_go_through_the_quality_pick() {
        let dir = tempfile::tempdir().unwrap();
        let good = face_frame(Scene::default());
        std::fs::write(dir.path().join("01-blurred.pgm"), pgm(&blurred(&good, 2))).unwrap();
        std::fs::write(dir.path().join("02-good.pgm"), pgm(&good)).unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"not a frame").unwrap();
        let mut camera = FaceCamera::new(FixtureSource::from_dir(dir.path()).unwrap());
        let capture = camera.capture_face(2).await.expect("a face");
        assert_eq!(capture.index, 1);
        assert_eq!(*capture.frame.luma, *good.luma);

        std::fs::write(dir.path().join("03-broken.pgm"), b"P6\n1 1\n255\n\0\0\0").unwrap();
        let Err(err) = FixtureSource::from_dir(dir.path()) else {
            panic!("a broken frame file is refused")
        };
        assert!(err.to_string().contains("03-broken.pgm"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        assert!(FixtureSource::from_dir(empty.path()).is_err());
    }

    #[test]
    fn truncated_or_foreign_pgm_is_refused() {
        let good = face_frame(Scene::default());
        let bytes = pgm(&good);
        assert_eq!(parse_pgm(&bytes).map(|f| f.width), Some(good.width));
        assert!(parse_pgm(&bytes[..bytes.len() - 1]).is_none());
        assert!(parse_pgm(b"P5\n2 2\n65535\n\0\0\0\0\0\0\0\0").is_none());
        assert!(parse_pgm(b"").is_none());
        assert!(parse_pgm(b"P5 99999999999999999999 2 255 ").is_none());
    }

    #[tokio::test]
    async fn no_acceptable_frame_is_an_error_with_a_reason() {
        let good = face_frame(Scene::default());
        let mut camera = FaceCamera::new(FixtureSource::new(vec![blurred(&good, 2)], false));
        assert!(matches!(
            camera.capture_face(3).await,
            Err(CameraError::NoAcceptableFace {
                frames: 1,
                reason: Rejection::Blurred(_)
            })
        ));
    }
}

/// V4L2 capture (feature `v4l2`, off by default: dev/CI kernels have no V4L2, and the `v4l`
/// bindings need libclang at build time). Negotiates YUYV, then GREY (luma is taken
/// directly); MJPEG-only cameras are reported as unsupported until a decoder is added.
/// Capture runs on its own thread (V4L2 calls block) feeding a 2-frame channel; dropping
/// the source stops it.
#[cfg(feature = "v4l2")]
pub mod v4l2 {
    use std::path::Path;
    use std::time::Duration;

    use async_trait::async_trait;
    use v4l::buffer::Type;
    use v4l::io::mmap::Stream;
    use v4l::io::traits::CaptureStream;
    use v4l::video::Capture;
    use v4l::{Device, FourCC};

    use super::{CameraError, Frame, FrameSource};

    #[derive(Clone, Copy)]
    enum Pixel {
        Yuyv,
        Grey,
    }

    pub struct V4l2Source {
        rx: tokio::sync::mpsc::Receiver<Result<Frame, String>>,
        frame_timeout: Duration,
    }

    fn negotiate(dev: &Device, width: u32, height: u32) -> Result<(Pixel, u32, u32), CameraError> {
        for (code, pixel) in [(b"YUYV", Pixel::Yuyv), (b"GREY", Pixel::Grey)] {
            let wanted = v4l::Format::new(width, height, FourCC::new(code));
            let got = dev
                .set_format(&wanted)
                .map_err(|e| CameraError::DeviceGone(e.to_string()))?;
            if got.fourcc == FourCC::new(code) {
                return Ok((pixel, got.width, got.height));
            }
        }
        Err(CameraError::Format(
            "camera offers neither YUYV nor GREY (MJPEG decoding is not built in)".into(),
        ))
    }

    fn to_frame(pixel: Pixel, width: u32, height: u32, buf: &[u8]) -> Option<Frame> {
        let (w, h) = (width as usize, height as usize);
        let luma: Vec<u8> = match pixel {
            Pixel::Yuyv => buf.get(..w * h * 2)?.iter().step_by(2).copied().collect(),
            Pixel::Grey => buf.get(..w * h)?.to_vec(),
        };
        Frame::new(w, h, luma)
    }

    impl V4l2Source {
        pub fn open(
            path: &Path,
            width: u32,
            height: u32,
            frame_timeout: Duration,
        ) -> Result<Self, CameraError> {
            let dev =
                Device::with_path(path).map_err(|e| CameraError::DeviceGone(e.to_string()))?;
            let (pixel, width, height) = negotiate(&dev, width, height)?;
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            std::thread::Builder::new()
                .name("v4l2-capture".into())
                .spawn(move || {
                    let mut stream = match Stream::with_buffers(&dev, Type::VideoCapture, 4) {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e.to_string()));
                            return;
                        }
                    };
                    stream.set_timeout(frame_timeout);
                    loop {
                        let item = match stream.next() {
                            Ok((buf, _meta)) => to_frame(pixel, width, height, buf)
                                .ok_or_else(|| "short frame".to_string()),
                            Err(e) => Err(e.to_string()),
                        };
                        let failed = item.is_err();
                        if tx.blocking_send(item).is_err() || failed {
                            return;
                        }
                    }
                })
                .map_err(|e| CameraError::DeviceGone(e.to_string()))?;
            Ok(Self { rx, frame_timeout })
        }
    }

    #[async_trait]
    impl FrameSource for V4l2Source {
        async fn next_frame(&mut self) -> Result<Frame, CameraError> {
            match tokio::time::timeout(self.frame_timeout, self.rx.recv()).await {
                Err(_) => Err(CameraError::Timeout(self.frame_timeout.as_millis() as u64)),
                Ok(None) => Err(CameraError::DeviceGone("capture thread stopped".into())),
                Ok(Some(Err(e))) => Err(CameraError::DeviceGone(e)),
                Ok(Some(Ok(frame))) => Ok(frame),
            }
        }
    }
}

/// SeetaFace frontal detection through `rustface` (feature `rustface`, off by default). The
/// crate ships its model (`model/seeta_fd_frontal_v1.0.bin`, 1.2 MB, BSD-2); the kiosk
/// installs it and passes its path. Builds in about 20 s. The model detects real faces only,
/// so tests and the synthetic camera use [`ContrastBlobDetector`].
#[cfg(feature = "rustface")]
pub mod seeta {
    use std::path::Path;

    use super::{FaceBox, FaceDetector, Frame};

    pub struct SeetaFaceDetector {
        model: rustface::Model,
        pub min_face_size: u32,
        pub score_threshold: f64,
    }

    impl SeetaFaceDetector {
        pub fn from_model_file(path: &Path) -> std::io::Result<Self> {
            let model = rustface::read_model(std::io::BufReader::new(std::fs::File::open(path)?))?;
            Ok(Self {
                model,
                min_face_size: 40,
                score_threshold: 2.0,
            })
        }
    }

    impl FaceDetector for SeetaFaceDetector {
        fn detect(&self, frame: &Frame) -> Vec<FaceBox> {
            if frame.width < 20 || frame.height < 20 {
                return Vec::new();
            }
            // rustface's detector is not Send; build one per call from the shared model.
            let mut detector = rustface::create_detector_with_model(self.model.clone());
            detector.set_min_face_size(self.min_face_size.max(20));
            detector.set_score_thresh(self.score_threshold);
            detector.set_pyramid_scale_factor(0.8);
            detector.set_slide_window_step(4, 4);
            let image =
                rustface::ImageData::new(&frame.luma, frame.width as u32, frame.height as u32);
            detector
                .detect(&image)
                .iter()
                .map(|f| {
                    let b = f.bbox();
                    let x = b.x().max(0) as usize;
                    let y = b.y().max(0) as usize;
                    FaceBox {
                        x: x.min(frame.width - 1),
                        y: y.min(frame.height - 1),
                        width: (b.width() as usize).min(frame.width - x.min(frame.width - 1)),
                        height: (b.height() as usize).min(frame.height - y.min(frame.height - 1)),
                    }
                })
                .collect()
        }
    }
}

/// The optional camera paths (features `v4l2`, `rustface`), compiled, linted and run in CI
/// (`.ci/run`'s camera step). No V4L2 device exists on CI kernels and no real person's face
/// may be in the repository, so these show what can be shown here: the V4L2 path names a
/// missing device, and the SeetaFace model finds a drawn face (eyes, mouth) where it was
/// drawn, nothing in a blank frame, and runs through the real quality pick.
#[cfg(all(test, any(feature = "v4l2", feature = "rustface")))]
mod feature_tests {
    use super::*;

    #[cfg(feature = "v4l2")]
    #[test]
    fn a_missing_v4l2_device_is_named_not_a_panic() {
        let missing = std::path::Path::new("/dev/video-kioskd-missing");
        let timeout = std::time::Duration::from_millis(200);
        let err = match v4l2::V4l2Source::open(missing, 640, 480, timeout) {
            Err(e) => e,
            Ok(_) => panic!("{} opened", missing.display()),
        };
        assert!(matches!(err, CameraError::DeviceGone(_)), "{err:?}");
    }

    /// The SeetaFace model as the `rustface` crate ships it (the kiosk package installs it).
    #[cfg(feature = "rustface")]
    fn seeta_model() -> std::path::PathBuf {
        let home = std::env::var_os("CARGO_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")))
            .expect("CARGO_HOME or HOME");
        let registry = home.join("registry/src");
        std::fs::read_dir(&registry)
            .expect("cargo registry sources")
            .flatten()
            .map(|index| {
                index
                    .path()
                    .join("rustface-0.1.7/model/seeta_fd_frontal_v1.0.bin")
            })
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("seeta_fd_frontal_v1.0.bin not under {}", registry.display()))
    }

    #[cfg(feature = "rustface")]
    #[tokio::test]
    async fn seeta_face_finds_the_drawn_face_and_the_quality_pick_takes_its_frame() {
        let detector = seeta::SeetaFaceDetector::from_model_file(&seeta_model()).expect("model");
        let face = synthetic::face_frame(synthetic::Scene::default());
        let empty = synthetic::face_frame(synthetic::Scene {
            faces: &[],
            ..synthetic::Scene::default()
        });
        // A face drawn with eyes and a mouth is found where it was drawn (centre, 40 % wide).
        let found = detector.detect(&face);
        assert!(!found.is_empty(), "SeetaFace finds the drawn face");
        let (cx, cy) = (face.width / 2, face.height / 2);
        assert!(
            found
                .iter()
                .any(|b| (b.x..b.x + b.width).contains(&cx) && (b.y..b.y + b.height).contains(&cy)),
            "{found:?}"
        );
        assert!(
            detector.detect(&empty).is_empty(),
            "nothing in a blank frame"
        );
        // Through the real quality pick: the blank frame is passed over for the face.
        let mut camera = FaceCamera::new(FixtureSource::new(vec![empty, face], false));
        camera.detector = Box::new(detector);
        match camera.capture_face(2).await {
            Ok(capture) => assert_eq!(capture.index, 1),
            Err(CameraError::NoAcceptableFace { reason, .. }) => {
                assert_ne!(reason, Rejection::NoFace, "the face was found, then judged")
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[cfg(feature = "rustface")]
    #[test]
    fn a_missing_model_file_is_an_io_error() {
        assert!(
            seeta::SeetaFaceDetector::from_model_file(std::path::Path::new("/nonexistent.bin"))
                .is_err()
        );
    }
}
