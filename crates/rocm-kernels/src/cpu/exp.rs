//! A vectorisable `exp` and `sigmoid` for `f32`.
//!
//! Cody–Waite range reduction `x = n·ln 2 + r`, |r| ≤ ln 2 / 2, with `n` rounded by the
//! 1.5·2²³ trick (its bits give `n` without a float-to-int conversion), Cephes' degree-6
//! polynomial for `e^r` (relative error ≤ 2·10⁻⁷ on the reduced range), and `2^n` built from the
//! exponent bits. Inputs are clamped to [−87, 88], so the result is always a finite normal float:
//! `exp(−100)` returns `e^−87` (≈ 1.6·10⁻³⁸) instead of a subnormal, which is what the
//! sigmoid and SiLU built on it need (no `0 · ∞`, no NaN).

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split into a part exact in few bits and the rest (Cephes' C1, C2).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5·2²³: adding it rounds to the nearest integer, which then sits in the low mantissa bits.
const ROUND: f32 = 12_582_912.0;
const LO: f32 = -87.0;
const HI: f32 = 88.0;

/// `e^x` for `x` in [−87, 88] (clamped outside), relative error ≤ 3·10⁻⁷.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // `clamp` keeps NaN (`max`/`min` would not).
    let x = x.clamp(LO, HI);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    // `n` as an integer: the low bits of `t`'s pattern minus those of ROUND.
    let k = t.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * (r * r) + r + 1.0;
    let scale = f32::from_bits(((k + 127) as u32) << 23);
    er * scale
}

/// `1 / (1 + e^{−x})`: never NaN for finite `x`, NaN for NaN.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_libm_to_a_few_ulp_over_the_range() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_7;
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
    }

    #[test]
    fn exp_clamps_instead_of_overflowing() {
        assert!(exp(1000.0).is_finite());
        assert!(exp(-1000.0) > 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert!((sigmoid(-1000.0)).abs() < 1e-37);
        assert_eq!(sigmoid(1000.0), 1.0);
        assert!(sigmoid(f32::NAN).is_nan());
    }
}
