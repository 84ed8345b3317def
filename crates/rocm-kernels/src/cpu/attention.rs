//! Scaled dot-product attention, `softmax(s · Q Kᵀ) V`, forward and backward, for the small heads
//! of the UNet (head sizes 8–64 over a few hundred tokens).
//!
//! One rayon task per (batch, head). A task transposes its `K` and `V` once (`[d, m]`, so that
//! every inner loop runs over the `m` keys, contiguous and vectorisable) and then works one query
//! row at a time: the row of scores, its softmax and the output row never leave a buffer of `m`
//! floats, so the `[n, m]` score matrix is never stored, forward or backward. The backward
//! recomputes each row of probabilities `p` from `Q` and `K` and, with `dP = dO Vᵀ`,
//! `δ = Σ_j p_j dP_j` and `dS = p ⊙ (dP − δ)`, accumulates
//! `dQ = s · dS K`, `dK = s · dSᵀ Q` and `dV = pᵀ dO` row by row.
//!
//! Sums over the keys run in 8 `f32` lanes; the exponentials are [`exp`].

use rayon::prelude::*;

use super::exp::exp;

/// The dimensions of one attention call over contiguous row-major buffers.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    /// Batch size times heads: the independent problems.
    pub problems: usize,
    /// Queries per problem.
    pub queries: usize,
    /// Keys (and values) per problem.
    pub keys: usize,
    /// Size of a query and key vector.
    pub head: usize,
    /// Size of a value vector.
    pub value: usize,
    /// Multiplies the scores before the softmax (usually `1/√head`).
    pub scale: f32,
}

impl AttentionShape {
    fn check(&self, q: &[f32], k: &[f32], v: &[f32]) {
        assert_eq!(
            q.len(),
            self.problems * self.queries * self.head,
            "attention: query length"
        );
        assert_eq!(
            k.len(),
            self.problems * self.keys * self.head,
            "attention: key length"
        );
        assert_eq!(
            v.len(),
            self.problems * self.keys * self.value,
            "attention: value length"
        );
    }

    fn empty(&self) -> bool {
        self.problems == 0 || self.queries == 0 || self.head == 0 && self.value == 0
    }
}

const LANES: usize = 8;

/// `y += a · x` (fused multiply-adds).
#[inline(always)]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = a.mul_add(x, *y);
    }
}

/// `Σ a_j b_j` in 8 lanes of fused multiply-adds.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a8, a_tail) = a[..n].as_chunks::<LANES>();
    let (b8, b_tail) = b[..n].as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for (x, y) in a8.iter().zip(b8) {
        for j in 0..LANES {
            acc[j] = x[j].mul_add(y[j], acc[j]);
        }
    }
    let tail: f32 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `out[r] = Σ_j rows[r·m + j] p_j` (`rows` is `[out.len(), m]`): the dots four rows at a time,
/// so that four independent chains of multiply-adds are in flight instead of one.
#[inline(always)]
fn gemv(rows: &[f32], m: usize, p: &[f32], out: &mut [f32]) {
    let (p8, p_tail) = p[..m].as_chunks::<LANES>();
    let full = out.len() / 4 * 4;
    for (r0, o4) in (0..full).step_by(4).zip(out.chunks_exact_mut(4)) {
        let row = |r: usize| rows[(r0 + r) * m..(r0 + r + 1) * m].as_chunks::<LANES>();
        let (rs, tails) = (
            [row(0).0, row(1).0, row(2).0, row(3).0],
            [row(0).1, row(1).1, row(2).1, row(3).1],
        );
        let mut acc = [[0.0f32; LANES]; 4];
        for (i, x) in p8.iter().enumerate() {
            for r in 0..4 {
                for j in 0..LANES {
                    acc[r][j] = rs[r][i][j].mul_add(x[j], acc[r][j]);
                }
            }
        }
        for r in 0..4 {
            let tail: f32 = tails[r].iter().zip(p_tail).map(|(a, b)| a * b).sum();
            o4[r] = acc[r].iter().sum::<f32>() + tail;
        }
    }
    for (r, o) in out.iter_mut().enumerate().skip(full) {
        *o = dot(&rows[r * m..(r + 1) * m], p);
    }
}

/// `out_j = Σ_r a_r rows[r·m + j]` (`rows` is `[a.len(), m]`): 32 outputs at a time, their
/// sums over `r` in four registers (four independent chains of multiply-adds), stored once.
#[inline(always)]
fn gemv_t(a: &[f32], rows: &[f32], m: usize, out: &mut [f32]) {
    const WIDE: usize = 4 * LANES;
    let (out32, _) = out[..m].as_chunks_mut::<WIDE>();
    for (block, o) in out32.iter_mut().enumerate() {
        let j0 = block * WIDE;
        let mut acc = [0.0f32; WIDE];
        for (r, &ar) in a.iter().enumerate() {
            let x: &[f32; WIDE] = rows[r * m + j0..r * m + j0 + WIDE]
                .try_into()
                .expect("a block of WIDE");
            for l in 0..WIDE {
                acc[l] = ar.mul_add(x[l], acc[l]);
            }
        }
        *o = acc;
    }
    for (j, o) in out.iter_mut().enumerate().take(m).skip(m / WIDE * WIDE) {
        *o = a
            .iter()
            .enumerate()
            .map(|(r, &ar)| ar * rows[r * m + j])
            .sum();
    }
}

/// `Σ a_j` in 8 lanes.
#[inline(always)]
fn sum(a: &[f32]) -> f32 {
    let (a8, tail) = a.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for x in a8 {
        for j in 0..LANES {
            acc[j] += x[j];
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// The larger of two floats (the first on ties and NaN), as one `maxps`.
#[inline(always)]
fn larger(a: f32, b: f32) -> f32 {
    if b > a { b } else { a }
}

/// The largest element, in 8 lanes (`−∞` for none).
#[inline(always)]
fn max(a: &[f32]) -> f32 {
    let (a8, tail) = a.as_chunks::<LANES>();
    let mut acc = [f32::NEG_INFINITY; LANES];
    for x in a8 {
        for j in 0..LANES {
            acc[j] = larger(acc[j], x[j]);
        }
    }
    let tail = tail.iter().fold(f32::NEG_INFINITY, |m, &v| larger(m, v));
    acc.iter().fold(tail, |m, &v| larger(m, v))
}

/// Keys rounded up to a whole number of [`gemv_t`]'s 32-wide blocks: the transposed buffers are
/// this wide, zero beyond the keys, so that no loop over the keys has a scalar tail (the 77 text
/// tokens of a cross-attention would leave 13).
fn padded(keys: usize) -> usize {
    keys.div_ceil(4 * LANES) * 4 * LANES
}

/// `x` (`[rows, cols]`) → `[cols, stride]`, zero beyond column `rows` of each row.
fn transpose(x: &[f32], rows: usize, cols: usize, stride: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; cols * stride];
    for (r, row) in x.chunks_exact(cols.max(1)).enumerate().take(rows) {
        for (c, &v) in row.iter().enumerate() {
            t[c * stride + r] = v;
        }
    }
    t
}

/// `t` (`[cols, stride]`) → `[rows, cols]` into `x`: the inverse of [`transpose`].
fn untranspose(t: &[f32], rows: usize, cols: usize, stride: usize, x: &mut [f32]) {
    for (r, row) in x.chunks_exact_mut(cols.max(1)).enumerate().take(rows) {
        for (c, v) in row.iter_mut().enumerate() {
            *v = t[c * stride + r];
        }
    }
}

/// Writes into `p` (`stride` long) the softmax of `q_i · Kᵀ` over the first `keys` entries and
/// zeros after them (`q_i` already scaled, `kt` is `Kᵀ`, `[head, stride]`).
#[inline(always)]
fn probabilities(q_row: &[f32], kt: &[f32], stride: usize, keys: usize, p: &mut [f32]) {
    gemv_t(q_row, kt, stride, p);
    p[keys..].fill(f32::NEG_INFINITY);
    softmax_in_place(p, keys);
}

/// `p ← softmax(p)` over the first `keys` entries (the rest, `−∞`, become 0).
#[inline(always)]
fn softmax_in_place(p: &mut [f32], keys: usize) {
    let max = max(p);
    for v in p.iter_mut() {
        *v = exp(*v - max);
    }
    // `exp` clamps at e⁻⁸⁷: the padding's exact zeros.
    p[keys..].fill(0.0);
    let total = sum(p);
    let inv = 1.0 / total;
    for v in p.iter_mut() {
        *v *= inv;
    }
}

/// `o = softmax(scale · Q Kᵀ) V` for every problem: `q` `[problems, queries, head]`, `k`
/// `[problems, keys, head]`, `v` `[problems, keys, value]`, `o` `[problems, queries, value]`.
pub fn forward(shape: AttentionShape, q: &[f32], k: &[f32], v: &[f32], o: &mut [f32]) {
    shape.check(q, k, v);
    assert_eq!(
        o.len(),
        shape.problems * shape.queries * shape.value,
        "attention: output length"
    );
    if shape.empty() {
        return;
    }
    let (n, m, d, e) = (shape.queries, shape.keys, shape.head, shape.value);
    if m == 0 {
        o.fill(f32::NAN);
        return;
    }
    o.par_chunks_mut(n * e)
        .zip(q.par_chunks(n * d.max(1)))
        .zip(k.par_chunks(m * d.max(1)).zip(v.par_chunks(m * e.max(1))))
        .for_each(|((o, q), (k, v))| forward_problem(shape, q, k, v, o));
}

simd_fn! {
    /// One (batch, head): `o = softmax(s · q kᵀ) v`, a query row at a time.
    fn forward_problem<'a>(shape: AttentionShape, q: &'a [f32], k: &'a [f32], v: &'a [f32], o: &'a mut [f32]) {
        let (m, d, e) = (shape.keys, shape.head, shape.value);
        let mp = padded(m);
        let (kt, vt) = (transpose(k, m, d, mp), transpose(v, m, e, mp));
        let q: Vec<f32> = q.iter().map(|&v| v * shape.scale).collect();
        let mut p = vec![0.0f32; mp];
        for (i, o_row) in o.chunks_exact_mut(e).enumerate() {
            probabilities(&q[i * d..(i + 1) * d], &kt, mp, m, &mut p);
            gemv(&vt, mp, &p, o_row);
        }
    }
}

/// The gradients of [`forward`] for the output gradient `dout`: `(dq, dk, dv)` in the layouts of
/// `q`, `k` and `v`.
pub fn backward(
    shape: AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dout: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    shape.check(q, k, v);
    let (n, m, d, e) = (shape.queries, shape.keys, shape.head, shape.value);
    assert_eq!(
        dout.len(),
        shape.problems * n * e,
        "attention backward: gradient length"
    );
    let (mut dq, mut dk, mut dv) = (
        vec![0.0f32; q.len()],
        vec![0.0f32; k.len()],
        vec![0.0f32; v.len()],
    );
    if shape.empty() || m == 0 {
        return (dq, dk, dv);
    }
    dq.par_chunks_mut(n * d.max(1))
        .zip(dk.par_chunks_mut(m * d.max(1)))
        .zip(dv.par_chunks_mut(m * e.max(1)))
        .zip(q.par_chunks(n * d.max(1)).zip(k.par_chunks(m * d.max(1))))
        .zip(
            v.par_chunks(m * e.max(1))
                .zip(dout.par_chunks(n * e.max(1))),
        )
        .for_each(|((((dq, dk), dv), (q, k)), (v, dout))| {
            backward_problem(shape, [q, k, v, dout], dq, dk, dv)
        });
    (dq, dk, dv)
}

simd_fn! {
    /// One (batch, head): `[q, k, v, dout]` in, `dq`, `dk`, `dv` out.
    fn backward_problem<'a>(
        shape: AttentionShape,
        inputs: [&'a [f32]; 4],
        dq: &'a mut [f32],
        dk: &'a mut [f32],
        dv: &'a mut [f32],
    ) {
        let [q, k, v, dout] = inputs;
        let (n, m, d, e, s) = (shape.queries, shape.keys, shape.head, shape.value, shape.scale);
        let mp = padded(m);
        let (kt, vt) = (transpose(k, m, d, mp), transpose(v, m, e, mp));
        let scaled: Vec<f32> = q.iter().map(|&v| v * s).collect();
        let (mut dkt, mut dvt) = (vec![0.0f32; d * mp], vec![0.0f32; e * mp]);
        let (mut p, mut ds) = (vec![0.0f32; mp], vec![0.0f32; mp]);
        for i in 0..n {
            let q_row = &q[i * d..(i + 1) * d];
            let do_row = &dout[i * e..(i + 1) * e];
            probabilities(&scaled[i * d..(i + 1) * d], &kt, mp, m, &mut p);
            // dV += pᵀ dO_i and dP = dO_i Vᵀ (zero on the padding, where p and V are).
            for (c, &g) in do_row.iter().enumerate() {
                axpy(&mut dvt[c * mp..(c + 1) * mp], g, &p);
            }
            gemv_t(do_row, &vt, mp, &mut ds);
            // dS = p ⊙ (dP − Σ p dP).
            let delta = dot(&p, &ds);
            for (g, &pj) in ds.iter_mut().zip(&p) {
                *g = pj * (*g - delta);
            }
            // dQ_i = s · dS K and dK += s · dSᵀ q_i.
            let dq_row = &mut dq[i * d..(i + 1) * d];
            gemv(&kt, mp, &ds, dq_row);
            for (c, (dqc, &qc)) in dq_row.iter_mut().zip(q_row).enumerate() {
                *dqc *= s;
                axpy(&mut dkt[c * mp..(c + 1) * mp], s * qc, &ds);
            }
        }
        untranspose(&dkt, m, d, mp, dk);
        untranspose(&dvt, m, e, mp, dv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook formulas in f64 with the `[n, m]` matrices stored.
    fn reference(
        shape: AttentionShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        dout: &[f32],
    ) -> [Vec<f64>; 4] {
        let (n, m, d, e) = (shape.queries, shape.keys, shape.head, shape.value);
        let mut out = [
            vec![0.0; shape.problems * n * e],
            vec![0.0; q.len()],
            vec![0.0; k.len()],
            vec![0.0; v.len()],
        ];
        for b in 0..shape.problems {
            let (qo, ko, vo, oo) = (b * n * d, b * m * d, b * m * e, b * n * e);
            let mut p = vec![0.0f64; n * m];
            for i in 0..n {
                let row: Vec<f64> = (0..m)
                    .map(|j| {
                        (0..d)
                            .map(|c| q[qo + i * d + c] as f64 * k[ko + j * d + c] as f64)
                            .sum::<f64>()
                            * shape.scale as f64
                    })
                    .collect();
                let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = row.iter().map(|s| (s - max).exp()).sum();
                for j in 0..m {
                    p[i * m + j] = (row[j] - max).exp() / total;
                }
            }
            for i in 0..n {
                for c in 0..e {
                    out[0][oo + i * e + c] = (0..m)
                        .map(|j| p[i * m + j] * v[vo + j * e + c] as f64)
                        .sum();
                }
                let dp: Vec<f64> = (0..m)
                    .map(|j| {
                        (0..e)
                            .map(|c| dout[oo + i * e + c] as f64 * v[vo + j * e + c] as f64)
                            .sum()
                    })
                    .collect();
                let delta: f64 = (0..m).map(|j| p[i * m + j] * dp[j]).sum();
                for j in 0..m {
                    let ds = p[i * m + j] * (dp[j] - delta) * shape.scale as f64;
                    for c in 0..d {
                        out[1][qo + i * d + c] += ds * k[ko + j * d + c] as f64;
                        out[2][ko + j * d + c] += ds * q[qo + i * d + c] as f64;
                    }
                    for c in 0..e {
                        out[3][vo + j * e + c] += p[i * m + j] * dout[oo + i * e + c] as f64;
                    }
                }
            }
        }
        out
    }

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 + seed) * 0.618_034).sin() * 1.5)
            .collect()
    }

    #[test]
    fn forward_and_backward_match_the_textbook_formulas() {
        for (problems, queries, keys, head, value) in [
            (2, 5, 7, 3, 4),
            (3, 16, 16, 8, 8),
            (1, 9, 77, 16, 16),
            (2, 1, 1, 2, 2),
        ] {
            let shape = AttentionShape {
                problems,
                queries,
                keys,
                head,
                value,
                scale: 1.0 / (head as f32).sqrt(),
            };
            let q = values(problems * queries * head, 1.0);
            let k = values(problems * keys * head, 2.0);
            let v = values(problems * keys * value, 3.0);
            let dout = values(problems * queries * value, 4.0);
            let mut o = vec![0.0; problems * queries * value];
            forward(shape, &q, &k, &v, &mut o);
            let (dq, dk, dv) = backward(shape, &q, &k, &v, &dout);
            let want = reference(shape, &q, &k, &v, &dout);
            for (name, got, want) in [
                ("o", &o, &want[0]),
                ("dq", &dq, &want[1]),
                ("dk", &dk, &want[2]),
                ("dv", &dv, &want[3]),
            ] {
                for (g, w) in got.iter().zip(want) {
                    assert!(
                        (*g as f64 - w).abs() <= 2e-6 * (1.0 + w.abs()),
                        "{shape:?} {name}: {g} against {w}"
                    );
                }
            }
        }
    }
}
