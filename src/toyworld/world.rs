//! The toy world's images and captions, ported from the reference's `data.py`:
//! one flat-coloured object (shape, colour, size, position) on a flat
//! background, 32×32, 4× super-sampled. The detector's shape templates and its
//! tests are rendered with the same code, so "exact on clean renders" checks the
//! detector against the world's own definition.

use std::fmt;
use std::str::FromStr;

use image::{Rgb, RgbImage};

use crate::rng::Rng;

/// Image side in pixels.
pub const RES: usize = 32;
/// Super-sampling factor per axis (anti-aliased edges).
pub const SS: usize = 4;

/// Implements the name table, `FromStr` and `Display` of a fixed set of words.
macro_rules! word_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn word(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($word => Ok($name::$variant),)+
                    other => Err(format!(
                        concat!("unknown ", $what, " `{}` (known: {})"),
                        other,
                        [$($word),+].join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.word())
            }
        }
    };
}

word_enum!(
    /// Object shapes.
    Shape, "shape" {
        Circle => "circle",
        Square => "square",
        Triangle => "triangle",
        Cross => "cross",
    }
);

word_enum!(
    /// The palette: object and background colours.
    Colour, "colour" {
        Red => "red",
        Green => "green",
        Blue => "blue",
        Yellow => "yellow",
        Purple => "purple",
        Orange => "orange",
        White => "white",
        Black => "black",
    }
);

word_enum!(
    /// Object sizes.
    Size, "size" {
        Small => "small",
        Big => "big",
    }
);

word_enum!(
    /// Object positions.
    Position, "position" {
        Left => "left",
        Right => "right",
        Top => "top",
        Bottom => "bottom",
        Center => "center",
    }
);

impl Colour {
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [230, 30, 30],
            Colour::Green => [40, 170, 40],
            Colour::Blue => [30, 70, 230],
            Colour::Yellow => [245, 220, 30],
            Colour::Purple => [140, 40, 190],
            Colour::Orange => [250, 140, 20],
            Colour::White => [245, 245, 245],
            Colour::Black => [15, 15, 15],
        }
    }
}

impl Size {
    /// The "radius" in pixels.
    pub fn radius(self) -> f64 {
        match self {
            Size::Small => 4.5,
            Size::Big => 8.0,
        }
    }
}

impl Position {
    /// The object centre `(x, y)` in pixels.
    pub fn centre(self) -> (f64, f64) {
        match self {
            Position::Left => (9.0, 16.0),
            Position::Right => (23.0, 16.0),
            Position::Top => (16.0, 9.0),
            Position::Bottom => (16.0, 23.0),
            Position::Center => (16.0, 16.0),
        }
    }

    /// The caption phrase ("on the left", "in the center", ...).
    pub fn phrase(self) -> &'static str {
        match self {
            Position::Left => "on the left",
            Position::Right => "on the right",
            Position::Top => "at the top",
            Position::Bottom => "at the bottom",
            Position::Center => "in the center",
        }
    }
}

/// The (shape, colour) pairs that never occur in pretraining.
pub const HELD_OUT: [(Shape, Colour); 2] = [
    (Shape::Cross, Colour::Purple),
    (Shape::Triangle, Colour::Orange),
];

pub fn is_held_out(shape: Shape, colour: Colour) -> bool {
    HELD_OUT.contains(&(shape, colour))
}

/// Everything one image shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    pub shape: Shape,
    pub colour: Colour,
    pub size: Size,
    pub pos: Position,
    pub bg: Colour,
}

impl Attrs {
    /// The canonical full caption: `"a {size} {colour} {shape} {position}, {bg} background"`.
    pub fn caption(&self) -> String {
        format!(
            "a {} {} {} {}, {} background",
            self.size,
            self.colour,
            self.shape,
            self.pos.phrase(),
            self.bg
        )
    }

    /// Random attributes with background ≠ object colour; held-out pairs are
    /// skipped when `exclude_held_out` (as in the training set).
    pub fn random(rng: &mut Rng, exclude_held_out: bool) -> Self {
        loop {
            let pick = |rng: &mut Rng, n: usize| rng.below(n as u64) as usize;
            let a = Attrs {
                shape: Shape::ALL[pick(rng, Shape::ALL.len())],
                colour: Colour::ALL[pick(rng, Colour::ALL.len())],
                size: Size::ALL[pick(rng, Size::ALL.len())],
                pos: Position::ALL[pick(rng, Position::ALL.len())],
                bg: Colour::ALL[pick(rng, Colour::ALL.len())],
            };
            if a.bg != a.colour && !(exclude_held_out && is_held_out(a.shape, a.colour)) {
                return a;
            }
        }
    }
}

/// Per-item jitter `(dx, dy, dr)` in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Jitter {
    pub dx: f64,
    pub dy: f64,
    pub dr: f64,
}

impl Jitter {
    /// The training set's jitter: ±1.5 px position, ±0.5 px radius.
    pub fn random(rng: &mut Rng) -> Self {
        let mut u = |a: f64| (rng.uniform() * 2.0 - 1.0) * a;
        Jitter {
            dx: u(1.5),
            dy: u(1.5),
            dr: u(0.5),
        }
    }
}

/// Whether the point `(dx, dy)` from the centre lies inside `shape` of radius `r`.
fn inside(shape: Shape, dx: f64, dy: f64, r: f64) -> bool {
    match shape {
        Shape::Circle => dx * dx + dy * dy <= r * r,
        Shape::Square => {
            let h = r * 0.85;
            dx.abs() <= h && dy.abs() <= h
        }
        Shape::Triangle => {
            // Pointing up: apex at cy − r, base at cy + r.
            let t = (dy + r) / (2.0 * r);
            (0.0..=1.0).contains(&t) && dx.abs() <= r * t
        }
        Shape::Cross => {
            // Upright plus sign with arm half-thickness r/3.
            let a = r / 3.0;
            (dx.abs() <= a && dy.abs() <= r) || (dy.abs() <= a && dx.abs() <= r)
        }
    }
}

/// Anti-aliased coverage in [0, 1] of `shape` centred at `(cx, cy)` with radius
/// `r`, `res × res` row-major (`data.py`'s `shape_mask`).
pub fn shape_mask(shape: Shape, cx: f64, cy: f64, r: f64, res: usize, ss: usize) -> Vec<f64> {
    let mut cov = vec![0.0; res * res];
    let per = (ss * ss) as f64;
    for py in 0..res {
        for px in 0..res {
            let mut hits = 0usize;
            for sy in 0..ss {
                let y = ((py * ss + sy) as f64 + 0.5) / ss as f64;
                for sx in 0..ss {
                    let x = ((px * ss + sx) as f64 + 0.5) / ss as f64;
                    if inside(shape, x - cx, y - cy, r) {
                        hits += 1;
                    }
                }
            }
            cov[py * res + px] = hits as f64 / per;
        }
    }
    cov
}

/// Blends `fg` over `bg` by coverage, rounding half to even as numpy does.
fn composite(cov: &[f64], fg: [u8; 3], bg: [u8; 3], res: usize) -> RgbImage {
    let mut img = RgbImage::new(res as u32, res as u32);
    for (i, c) in cov.iter().enumerate() {
        let mut px = [0u8; 3];
        for k in 0..3 {
            let v = c * fg[k] as f64 + (1.0 - c) * bg[k] as f64;
            px[k] = v.round_ties_even().clamp(0.0, 255.0) as u8;
        }
        img.put_pixel((i % res) as u32, (i / res) as u32, Rgb(px));
    }
    img
}

/// Renders one image (`data.py`'s `render`).
pub fn render(a: &Attrs, j: Jitter) -> RgbImage {
    let (cx, cy) = a.pos.centre();
    let r = a.size.radius() + j.dr;
    let cov = shape_mask(a.shape, cx + j.dx, cy + j.dy, r, RES, SS);
    composite(&cov, a.colour.rgb(), a.bg.rgb(), RES)
}

/// A random training-set-like item (held-out pairs excluded): image and attributes.
pub fn random_item(rng: &mut Rng) -> (RgbImage, Attrs) {
    let a = Attrs::random(rng, true);
    let j = Jitter::random(rng);
    (render(&a, j), a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for s in Shape::ALL {
            assert_eq!(s.word().parse::<Shape>().unwrap(), *s);
        }
        for c in Colour::ALL {
            assert_eq!(c.to_string().parse::<Colour>().unwrap(), *c);
        }
        assert!("pink".parse::<Colour>().is_err());
        assert_eq!(Colour::ALL.len(), 8);
    }

    #[test]
    fn coverage_matches_the_geometry() {
        // A big centred circle covers about π r² pixels.
        let cov = shape_mask(Shape::Circle, 16.0, 16.0, 8.0, RES, SS);
        let area: f64 = cov.iter().sum();
        assert!((area - std::f64::consts::PI * 64.0).abs() < 2.0, "{area}");
        // The square's half-side is 0.85 r: (2 · 6.8)² = 184.96.
        let sq: f64 = shape_mask(Shape::Square, 16.0, 16.0, 8.0, RES, SS)
            .iter()
            .sum();
        assert!((sq - 184.96).abs() < 3.0, "{sq}");
        // Triangle area r · 2r = 128; cross area 2 · (2r · 2r/3) − (2r/3)² = 142.2.
        let tri: f64 = shape_mask(Shape::Triangle, 16.0, 16.0, 8.0, RES, SS)
            .iter()
            .sum();
        assert!((tri - 128.0).abs() < 3.0, "{tri}");
        let cross: f64 = shape_mask(Shape::Cross, 16.0, 16.0, 8.0, RES, SS)
            .iter()
            .sum();
        assert!((cross - 142.2).abs() < 5.0, "{cross}");
        // The triangle points up: more coverage in the bottom half.
        let tri = shape_mask(Shape::Triangle, 16.0, 16.0, 8.0, RES, SS);
        let top: f64 = tri[..16 * RES].iter().sum();
        let bottom: f64 = tri[16 * RES..].iter().sum();
        assert!(bottom > 2.0 * top, "{top} {bottom}");
    }

    #[test]
    fn render_puts_the_object_on_the_background() {
        let a = Attrs {
            shape: Shape::Square,
            colour: Colour::Red,
            size: Size::Big,
            pos: Position::Left,
            bg: Colour::Blue,
        };
        let img = render(&a, Jitter::default());
        assert_eq!(img.get_pixel(9, 16).0, Colour::Red.rgb());
        assert_eq!(img.get_pixel(30, 2).0, Colour::Blue.rgb());
        assert_eq!(a.caption(), "a big red square on the left, blue background");
    }

    #[test]
    fn random_items_respect_the_rules() {
        let mut rng = Rng::seed(3);
        for _ in 0..500 {
            let a = Attrs::random(&mut rng, true);
            assert_ne!(a.bg, a.colour);
            assert!(!is_held_out(a.shape, a.colour));
            let j = Jitter::random(&mut rng);
            assert!(j.dx.abs() <= 1.5 && j.dy.abs() <= 1.5 && j.dr.abs() <= 0.5);
        }
    }
}
