//! Which rank samples what, and the effective-batch rule.

/// The most devices (replicas) a data-parallel run may have.
pub const MAX_DEVICES: usize = 64;

/// Rank `rank`'s contiguous share of one global micro-batch of `chunk.len()` samples split over
/// `ranks` ranks: `chunk[rank · s .. (rank + 1) · s]` with `s = chunk.len() / ranks` (the
/// trainer's micro-batches are always a multiple of the rank count).
///
/// ```
/// use rocm_trainer::parallel::rank_slice;
/// let micro_batch = [10, 11, 12, 13];
/// assert_eq!(rank_slice(&micro_batch, 2, 0), vec![10, 11]);
/// assert_eq!(rank_slice(&micro_batch, 2, 1), vec![12, 13]);
/// ```
pub fn rank_slice<T: Clone>(chunk: &[T], ranks: usize, rank: usize) -> Vec<T> {
    let size = chunk.len() / ranks.max(1);
    chunk
        .get(rank * size..(rank + 1) * size)
        .map(<[T]>::to_vec)
        .unwrap_or_default()
}

/// The effective batch of a run: `batch_size × gradient_accumulation_steps × devices` prompts
/// per optimizer update (saturating).
pub fn effective_batch(batch_size: usize, accumulation: usize, devices: usize) -> usize {
    batch_size
        .saturating_mul(accumulation)
        .saturating_mul(devices.max(1))
}

/// The gradient-accumulation steps that keep an effective batch of `effective` with
/// `batch_size` prompts per micro-batch on `devices` devices, or why none does (the message
/// names the numbers).
///
/// ```
/// use rocm_trainer::parallel::accumulation_for;
/// assert_eq!(accumulation_for(8, 2, 2), Ok(2)); // 2 × 2 × 2 = 8
/// assert!(accumulation_for(8, 3, 2).unwrap_err().contains("not a multiple of 3 × 2"));
/// ```
pub fn accumulation_for(
    effective: usize,
    batch_size: usize,
    devices: usize,
) -> Result<usize, String> {
    let per_step = batch_size.saturating_mul(devices.max(1));
    if per_step == 0 || effective == 0 || !effective.is_multiple_of(per_step) {
        return Err(format!(
            "an effective batch of {effective} (batch_size × gradient_accumulation_steps × \
             devices) is not a multiple of {batch_size} × {devices} (batch_size × devices)"
        ));
    }
    Ok(effective / per_step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_slices_partition_a_micro_batch() {
        let chunk: Vec<u32> = (0..12).collect();
        let parts: Vec<u32> = (0..3).flat_map(|r| rank_slice(&chunk, 3, r)).collect();
        assert_eq!(parts, chunk);
        assert_eq!(effective_batch(2, 3, 4), 24);
        assert_eq!(accumulation_for(24, 2, 3), Ok(4));
        assert_eq!(accumulation_for(24, 2, 4), Ok(3));
        assert!(accumulation_for(24, 5, 1).is_err());
    }
}
