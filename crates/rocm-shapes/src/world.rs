//! The attributes of the shapes world (docs/world.md §1), the scene sampler with its train / validation /
//! test splits, and the caption grammar.
//!
//! A [`Scene`] is one or two [`Object`]s on a [`Background`]; its caption names every object's
//! colour and shape and, depending on the template, its size, position and the background. The
//! scene keeps the exact attributes (and the continuous geometry the renderer draws), so every
//! image comes with its ground truth.
//!
//! Splits: scenes are drawn from a seed (ChaCha8) in a split's own seed range, and the training
//! split never contains the [`HELD_OUT`] colour–shape combinations, which [`Split::Compositional`]
//! always contains (one object at least), so compositional generalisation can be measured.

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// Image side in pixels.
pub const IMAGE_SIZE: usize = 32;

/// An object's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Shape {
    /// A disc of radius `s`.
    Circle,
    /// An axis-aligned square of half-side `s`.
    Square,
    /// An upward isosceles triangle in the box `±s` (base `2s`, height `2s`).
    Triangle,
    /// A plus sign: two bars of length `2s` and width `2s/3`.
    Cross,
}

/// An object's colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Colour {
    /// `(1, 0, 0)`.
    Red,
    /// `(0, 0.8, 0)`.
    Green,
    /// `(0, 0.2, 1)`.
    Blue,
    /// `(1, 0.9, 0)`.
    Yellow,
    /// `(1, 0, 1)`.
    Magenta,
    /// `(0, 0.9, 0.9)`.
    Cyan,
    /// `(1, 1, 1)`.
    White,
    /// `(0, 0, 0)`.
    Black,
}

/// An object's size class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Size {
    /// Half-extent `s ∈ [3, 4]` px.
    Small,
    /// Half-extent `s ∈ [6.5, 7.5]` px (`[5, 6]` in two-object scenes).
    Large,
}

/// Where an object sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Position {
    /// Centre `(16, 16)`.
    Centre,
    /// `(10, 16)`.
    Left,
    /// `(22, 16)`.
    Right,
    /// `(16, 10)`.
    Top,
    /// `(16, 22)`.
    Bottom,
    /// `(10, 10)`.
    TopLeft,
    /// `(22, 10)`.
    TopRight,
    /// `(10, 22)`.
    BottomLeft,
    /// `(22, 22)`.
    BottomRight,
}

/// The background colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Background {
    /// `(0.5, 0.5, 0.5)`.
    Gray,
    /// `(1, 1, 1)`.
    White,
    /// `(0, 0, 0)`.
    Black,
}

/// Every shape, in caption-vocabulary order.
pub const SHAPES: [Shape; 4] = [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Cross];
/// Every colour.
pub const COLOURS: [Colour; 8] = [
    Colour::Red,
    Colour::Green,
    Colour::Blue,
    Colour::Yellow,
    Colour::Magenta,
    Colour::Cyan,
    Colour::White,
    Colour::Black,
];
/// Both sizes.
pub const SIZES: [Size; 2] = [Size::Small, Size::Large];
/// Every position.
pub const POSITIONS: [Position; 9] = [
    Position::Centre,
    Position::Left,
    Position::Right,
    Position::Top,
    Position::Bottom,
    Position::TopLeft,
    Position::TopRight,
    Position::BottomLeft,
    Position::BottomRight,
];
/// Every background.
pub const BACKGROUNDS: [Background; 3] = [Background::Gray, Background::White, Background::Black];

/// The colour–shape combinations that the training split never shows (one per shape, and no
/// colour twice): the compositional test set.
pub const HELD_OUT: [(Colour, Shape); 4] = [
    (Colour::Red, Shape::Triangle),
    (Colour::Green, Shape::Cross),
    (Colour::Blue, Shape::Circle),
    (Colour::Yellow, Shape::Square),
];

/// Whether `(colour, shape)` is one of [`HELD_OUT`].
pub fn is_held_out(colour: Colour, shape: Shape) -> bool {
    HELD_OUT.contains(&(colour, shape))
}

impl Shape {
    /// The caption word.
    pub fn word(self) -> &'static str {
        match self {
            Self::Circle => "circle",
            Self::Square => "square",
            Self::Triangle => "triangle",
            Self::Cross => "cross",
        }
    }
}

impl Colour {
    /// The caption word.
    pub fn word(self) -> &'static str {
        match self {
            Self::Red => "red",
            Self::Green => "green",
            Self::Blue => "blue",
            Self::Yellow => "yellow",
            Self::Magenta => "magenta",
            Self::Cyan => "cyan",
            Self::White => "white",
            Self::Black => "black",
        }
    }

    /// Linear RGB in `[0, 1]`.
    pub fn rgb(self) -> [f32; 3] {
        match self {
            Self::Red => [1.0, 0.0, 0.0],
            Self::Green => [0.0, 0.8, 0.0],
            Self::Blue => [0.0, 0.2, 1.0],
            Self::Yellow => [1.0, 0.9, 0.0],
            Self::Magenta => [1.0, 0.0, 1.0],
            Self::Cyan => [0.0, 0.9, 0.9],
            Self::White => [1.0, 1.0, 1.0],
            Self::Black => [0.0, 0.0, 0.0],
        }
    }
}

impl Size {
    /// The caption word.
    pub fn word(self) -> &'static str {
        match self {
            Self::Small => "small",
            Self::Large => "large",
        }
    }
}

impl Background {
    /// The caption word.
    pub fn word(self) -> &'static str {
        match self {
            Self::Gray => "gray",
            Self::White => "white",
            Self::Black => "black",
        }
    }

    /// Linear RGB in `[0, 1]`.
    pub fn rgb(self) -> [f32; 3] {
        match self {
            Self::Gray => [0.5, 0.5, 0.5],
            Self::White => [1.0, 1.0, 1.0],
            Self::Black => [0.0, 0.0, 0.0],
        }
    }

    /// Whether an object of `colour` is allowed on this background (not the same colour).
    pub fn allows(self, colour: Colour) -> bool {
        !matches!(
            (self, colour),
            (Self::White, Colour::White) | (Self::Black, Colour::Black)
        )
    }
}

impl Position {
    /// The caption phrase ("on the left", "at the top right", "in the centre").
    pub fn phrase(self) -> &'static str {
        match self {
            Self::Centre => "in the centre",
            Self::Left => "on the left",
            Self::Right => "on the right",
            Self::Top => "at the top",
            Self::Bottom => "at the bottom",
            Self::TopLeft => "at the top left",
            Self::TopRight => "at the top right",
            Self::BottomLeft => "at the bottom left",
            Self::BottomRight => "at the bottom right",
        }
    }

    /// The anchor point `(x, y)` in pixels (origin top left, pixel `(i, j)` covers `[j, j+1] × [i, i+1]`).
    pub fn anchor(self) -> (f32, f32) {
        let (l, c, r) = (10.0, 16.0, 22.0);
        match self {
            Self::Centre => (c, c),
            Self::Left => (l, c),
            Self::Right => (r, c),
            Self::Top => (c, l),
            Self::Bottom => (c, r),
            Self::TopLeft => (l, l),
            Self::TopRight => (r, l),
            Self::BottomLeft => (l, r),
            Self::BottomRight => (r, r),
        }
    }

    /// The position whose anchor is nearest to `(x, y)`.
    pub fn nearest(x: f32, y: f32) -> Self {
        let d = |p: &Self| {
            let (ax, ay) = p.anchor();
            (ax - x).powi(2) + (ay - y).powi(2)
        };
        POSITIONS
            .into_iter()
            .min_by(|a, b| d(a).total_cmp(&d(b)))
            .unwrap_or(Self::Centre)
    }
}

/// One object of a scene: its attributes and the geometry drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Object {
    /// Shape.
    pub shape: Shape,
    /// Colour.
    pub colour: Colour,
    /// Size class.
    pub size: Size,
    /// The position class (the anchor placed at, or the nearest one for free placement).
    pub position: Position,
    /// Centre x in pixels.
    pub cx: f32,
    /// Centre y in pixels.
    pub cy: f32,
    /// Half-extent in pixels: the object fills the box `[cx ± s] × [cy ± s]`.
    pub s: f32,
}

/// Which attributes the caption names (colour and shape always are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Named {
    /// The size of each object.
    pub size: bool,
    /// The position of each object.
    pub position: bool,
    /// The background colour.
    pub background: bool,
}

/// A scene: objects on a background, with its caption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    /// Background colour.
    pub background: Background,
    /// One or two objects, drawn in order.
    pub objects: Vec<Object>,
    /// The attributes the caption names.
    pub named: Named,
    /// The caption.
    pub caption: String,
}

/// A split of the world: disjoint seed ranges, and held-out colour–shape combinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Split {
    /// Seeds `[0, 2^40)`, never a [`HELD_OUT`] combination.
    Train,
    /// Seeds `[2^40, 2^41)`, any combination.
    Validation,
    /// Seeds `[2^41, 2^42)`, any combination.
    Test,
    /// Seeds `[2^42, 2^43)`, the first object always a [`HELD_OUT`] combination.
    Compositional,
}

impl Split {
    /// The first seed of the split's range.
    pub fn base_seed(self) -> u64 {
        match self {
            Self::Train => 0,
            Self::Validation => 1 << 40,
            Self::Test => 1 << 41,
            Self::Compositional => 1 << 42,
        }
    }

    /// Scene number `index` of this split (deterministic).
    pub fn scene(self, index: u64) -> Scene {
        let mut rng = ChaCha8Rng::seed_from_u64(self.base_seed() + index);
        loop {
            let scene = sample_scene(&mut rng, self == Self::Compositional);
            let held = scene.objects.iter().any(|o| is_held_out(o.colour, o.shape));
            if self != Self::Train || !held {
                return scene;
            }
        }
    }

    /// Scenes `start..start + n` of this split.
    pub fn scenes(self, start: u64, n: usize) -> Vec<Scene> {
        (start..start + n as u64).map(|i| self.scene(i)).collect()
    }
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

fn half_extent(rng: &mut ChaCha8Rng, size: Size, pair: bool) -> f32 {
    match (size, pair) {
        (Size::Small, _) => rng.random_range(3.0..4.0),
        (Size::Large, false) => rng.random_range(6.5..7.5),
        (Size::Large, true) => rng.random_range(5.0..6.0),
    }
}

/// The caption templates: `(objects, names size, names position, names background)`.
const TEMPLATES: [(usize, bool, bool, bool); 8] = [
    (1, false, false, false), // a red circle
    (1, true, false, false),  // a large red circle
    (1, true, false, true),   // a large red circle on a gray background
    (1, false, true, false),  // a red circle at the top left
    (1, true, true, false),   // a small red circle on the left
    (1, true, true, true),    // a small red circle at the top on a black background
    (2, false, false, false), // a red circle and a green triangle
    (2, true, false, true),   // a large red circle and a small green cross on a white background
];

fn sample_scene(rng: &mut ChaCha8Rng, force_held_out: bool) -> Scene {
    let (count, size_named, position_named, background_named) = pick(rng, &TEMPLATES);
    let background = pick(rng, &BACKGROUNDS);
    let mut objects: Vec<Object> = Vec::with_capacity(count);
    for k in 0..count {
        let (colour, shape) = if k == 0 && force_held_out {
            pick(rng, &HELD_OUT)
        } else {
            (pick(rng, &COLOURS), pick(rng, &SHAPES))
        };
        if !background.allows(colour) || objects.iter().any(|o| o.colour == colour) {
            // Resample the whole scene: keeps the distribution simple and the loop short.
            return sample_scene(rng, force_held_out);
        }
        let size = pick(rng, &SIZES);
        let s = half_extent(rng, size, count == 2);
        let (position, cx, cy) = if count == 2 {
            // First object on the left, second on the right.
            let x = if k == 0 { 8.5 } else { 23.5 };
            let pos = if k == 0 {
                Position::Left
            } else {
                Position::Right
            };
            let jx = rng.random_range(-0.5..0.5);
            let jy = rng.random_range(-2.5..2.5);
            (pos, x + jx, 16.0 + jy)
        } else if position_named {
            let pos = pick(rng, &POSITIONS);
            let (ax, ay) = pos.anchor();
            let lim = (ax - s - 1.5)
                .min(IMAGE_SIZE as f32 - ax - s - 1.5)
                .clamp(0.0, 1.5);
            let lim_y = (ay - s - 1.5)
                .min(IMAGE_SIZE as f32 - ay - s - 1.5)
                .clamp(0.0, 1.5);
            let jx = if lim > 0.0 {
                rng.random_range(-lim..lim)
            } else {
                0.0
            };
            let jy = if lim_y > 0.0 {
                rng.random_range(-lim_y..lim_y)
            } else {
                0.0
            };
            (pos, ax + jx, ay + jy)
        } else {
            let margin = s + 2.0;
            let x = rng.random_range(margin..IMAGE_SIZE as f32 - margin);
            let y = rng.random_range(margin..IMAGE_SIZE as f32 - margin);
            (Position::nearest(x, y), x, y)
        };
        objects.push(Object {
            shape,
            colour,
            size,
            position,
            cx,
            cy,
            s,
        });
    }
    let named = Named {
        size: size_named,
        position: position_named,
        background: background_named,
    };
    let caption = caption(&objects, background, named);
    Scene {
        background,
        objects,
        named,
        caption,
    }
}

/// The caption of `objects` on `background` naming what `named` says.
///
/// Grammar: `object ("and" object)? ("on a" BG "background")?`, with
/// `object = "a" SIZE? COLOUR SHAPE POSITION?`.
pub fn caption(objects: &[Object], background: Background, named: Named) -> String {
    let mut parts = Vec::new();
    for (k, o) in objects.iter().enumerate() {
        if k > 0 {
            parts.push("and".to_string());
        }
        parts.push("a".into());
        if named.size {
            parts.push(o.size.word().into());
        }
        parts.push(o.colour.word().into());
        parts.push(o.shape.word().into());
        if named.position && objects.len() == 1 {
            parts.push(o.position.phrase().into());
        }
    }
    if named.background {
        parts.push(format!("on a {} background", background.word()));
    }
    parts.join(" ")
}

/// What a caption of this grammar asks for: the objects' attributes (size and position when
/// named) and the background when named.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PromptSpec {
    /// The objects asked for, in order.
    pub objects: Vec<ObjectSpec>,
    /// The background, when named.
    pub background: Option<Background>,
}

/// One object a prompt asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObjectSpec {
    /// The colour named (every object of the grammar names one).
    pub colour: Option<Colour>,
    /// The shape named.
    pub shape: Option<Shape>,
    /// The size named.
    pub size: Option<Size>,
    /// The position named.
    pub position: Option<Position>,
}

impl PromptSpec {
    /// Parses a caption of the grammar ([`caption`]); unknown words are ignored, so any text
    /// parses (to fewer requirements).
    pub fn parse(prompt: &str) -> Self {
        let lower = prompt.to_lowercase();
        let (objects_text, background) = match lower.split_once(" background") {
            Some((head, _)) => match head.rsplit_once(" on a ") {
                Some((objs, bg)) => (
                    objs.to_string(),
                    word_to(&BACKGROUNDS, bg.trim(), |b| b.word()),
                ),
                None => (lower.clone(), None),
            },
            None => (lower.clone(), None),
        };
        let mut objects = Vec::new();
        for part in objects_text.split(" and ") {
            let mut spec = ObjectSpec {
                colour: None,
                shape: None,
                size: None,
                position: None,
            };
            for phrase in POSITIONS {
                // Longest phrases first would be needed only if one were a suffix of another
                // phrase; "at the top" is a prefix of "at the top left", so match whole ends.
                if part.ends_with(phrase.phrase()) {
                    let better = spec
                        .position
                        .is_none_or(|p: Position| p.phrase().len() < phrase.phrase().len());
                    if better {
                        spec.position = Some(phrase);
                    }
                }
            }
            for word in part.split_whitespace() {
                if let Some(c) = word_to(&COLOURS, word, |c| c.word()) {
                    spec.colour = Some(c);
                }
                if let Some(s) = word_to(&SHAPES, word, |s| s.word()) {
                    spec.shape = Some(s);
                }
                if let Some(s) = word_to(&SIZES, word, |s| s.word()) {
                    spec.size = Some(s);
                }
            }
            if spec.colour.is_some() || spec.shape.is_some() {
                objects.push(spec);
            }
        }
        Self {
            objects,
            background,
        }
    }
}

fn word_to<T: Copy>(items: &[T], word: &str, name: impl Fn(T) -> &'static str) -> Option<T> {
    items.iter().copied().find(|&t| name(t) == word)
}

/// Every word the grammar uses (the tokenizer's vocabulary), in a fixed order.
pub fn vocabulary() -> Vec<&'static str> {
    let mut words: Vec<&'static str> = vec!["a", "and", "on", "background", "in", "at", "the"];
    words.extend(SHAPES.iter().map(|s| s.word()));
    words.extend(COLOURS.iter().map(|c| c.word()));
    words.extend(SIZES.iter().map(|s| s.word()));
    words.extend(BACKGROUNDS.iter().map(|b| b.word()));
    for p in POSITIONS {
        words.extend(p.phrase().split(' '));
    }
    let mut seen = std::collections::HashSet::new();
    words.retain(|w| seen.insert(*w));
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenes_are_deterministic_and_splits_differ() {
        assert_eq!(Split::Train.scene(7), Split::Train.scene(7));
        assert_ne!(Split::Train.scene(7), Split::Test.scene(7));
    }

    #[test]
    fn training_never_shows_held_out_combinations_and_compositional_always_does() {
        for i in 0..400 {
            let train = Split::Train.scene(i);
            assert!(
                train
                    .objects
                    .iter()
                    .all(|o| !is_held_out(o.colour, o.shape))
            );
            let comp = Split::Compositional.scene(i);
            assert!(is_held_out(comp.objects[0].colour, comp.objects[0].shape));
        }
        let test_held = (0..400)
            .filter(|&i| {
                let s = Split::Test.scene(i);
                s.objects.iter().any(|o| is_held_out(o.colour, o.shape))
            })
            .count();
        assert!(test_held > 10, "{test_held}");
    }

    #[test]
    fn objects_stay_inside_the_frame_with_legal_colours() {
        for i in 0..500 {
            let scene = Split::Validation.scene(i);
            assert!((1..=2).contains(&scene.objects.len()));
            for o in &scene.objects {
                assert!(o.cx - o.s >= 1.0 && o.cx + o.s <= 31.0, "{o:?}");
                assert!(o.cy - o.s >= 1.0 && o.cy + o.s <= 31.0, "{o:?}");
                assert!(scene.background.allows(o.colour));
            }
            if scene.objects.len() == 2 {
                assert_ne!(scene.objects[0].colour, scene.objects[1].colour);
            }
        }
    }

    #[test]
    fn captions_parse_back_to_the_attributes() {
        for i in 0..300 {
            let scene = Split::Train.scene(i);
            let spec = PromptSpec::parse(&scene.caption);
            assert_eq!(spec.objects.len(), scene.objects.len(), "{}", scene.caption);
            for (o, s) in scene.objects.iter().zip(&spec.objects) {
                assert_eq!(s.colour, Some(o.colour));
                assert_eq!(s.shape, Some(o.shape));
                assert_eq!(s.size, scene.named.size.then_some(o.size));
                let pos = scene.named.position && scene.objects.len() == 1;
                assert_eq!(s.position, pos.then_some(o.position), "{}", scene.caption);
            }
            let bg = scene.named.background.then_some(scene.background);
            assert_eq!(spec.background, bg, "{}", scene.caption);
        }
    }

    #[test]
    fn caption_examples() {
        let o = |colour, shape, size, position| Object {
            shape,
            colour,
            size,
            position,
            cx: 16.0,
            cy: 16.0,
            s: 4.0,
        };
        let all = Named {
            size: true,
            position: true,
            background: true,
        };
        let red = o(Colour::Red, Shape::Circle, Size::Large, Position::TopLeft);
        assert_eq!(
            caption(&[red], Background::Gray, all),
            "a large red circle at the top left on a gray background"
        );
        let green = o(Colour::Green, Shape::Triangle, Size::Small, Position::Right);
        assert_eq!(
            caption(&[red, green], Background::White, Named::default()),
            "a red circle and a green triangle"
        );
        assert!(vocabulary().contains(&"magenta") && vocabulary().contains(&"centre"));
    }
}
