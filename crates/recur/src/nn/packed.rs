//! Variable-length sequences: PyTorch's `PackedSequence` and its pack / pad utilities.
//!
//! A batch of sequences of different lengths is *packed* by sorting it by decreasing length and
//! laying the steps one after another, each holding only the sequences still running:
//! `data (N, *)` with `N = Σ lengths`, and `batch_sizes[t]` rows at step `t`. The recurrent layers
//! run packed batches with no work on padding, take each sequence's final state at its own last
//! step, and start the reverse direction at each sequence's own end.
//!
//! Every function here is differentiable: packing and padding are row gathers (`index_select`),
//! so gradients reach the padded input at the real positions and are exactly zero at the padding.
//!
//! Unlike PyTorch, a length longer than the padded input is an error (PyTorch truncates silently),
//! and a packed layout built by hand is validated.
//!
//! Most code needs none of this: the layers' `forward_with_lengths` takes a padded batch and the
//! lengths in any order, and returns the padded output and every sequence's true final state.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use recur::{pack_padded_sequence, pad_packed_sequence, Gru, GruConfig, Padding};
//!
//! let varmap = candle_nn::VarMap::new();
//! let vb = recur::seeded_var_builder(&varmap, 1, DType::F32, &Device::Cpu);
//! let cfg = GruConfig { batch_first: true, bidirectional: true, ..GruConfig::new(8, 16) };
//! let gru = Gru::new(cfg, vb)?;
//! let x = Tensor::randn(0f32, 1.0, (3, 5, 8), &Device::Cpu)?; // (B, T, I), padded
//! let lengths = [2, 5, 3]; // any order
//!
//! let (out, state) = gru.forward_with_lengths(&x, &lengths, None)?;
//! assert_eq!(out.dims(), &[3, 5, 32]); // zeros after each sequence's end
//! assert_eq!(state.h.dims(), &[2, 3, 16]); // h_n of sequence b taken at its own last step
//!
//! // Left padding, another value at the padded outputs:
//! let _ = gru.forward_padded(&x, &Padding::left(&lengths).with_value(-1.0), None)?;
//!
//! // Or PyTorch's way, with the same results:
//! let packed = pack_padded_sequence(&x, &lengths, true, false)?;
//! let (packed_out, _) = gru.forward_packed(&packed, None)?;
//! let (padded, _) = pad_packed_sequence(&packed_out, true, 0.0, None)?;
//! assert_eq!(padded.dims(), &[3, 5, 32]);
//! # Ok::<(), recur::Error>(())
//! ```

use candle_core::{DType, Tensor};

use crate::{Error, Result};

/// Which end of each padded sequence holds the padding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PaddingSide {
    /// Real steps first, padding after them (PyTorch's default).
    #[default]
    Right,
    /// Padding first, real steps at the end.
    Left,
}

/// A batch of variable-length sequences in PyTorch's packed layout.
///
/// - `data`: `(N, *)`, the steps one after another (time-major), each holding the sequences
///   still running, longest first;
/// - `batch_sizes`: how many sequences run at each step (decreasing, none zero);
/// - `sorted_indices`: `sorted_indices[j]` is the caller's index of the `j`-th longest sequence,
///   `None` when the batch came sorted; `unsorted_indices` is its inverse.
///
/// Recurrent layers take the initial state and return the final state in the caller's order.
#[derive(Clone, Debug)]
pub struct PackedSequence {
    data: Tensor,
    batch_sizes: Vec<usize>,
    sorted_indices: Option<Vec<usize>>,
    unsorted_indices: Option<Vec<usize>>,
}

impl PackedSequence {
    /// Builds a packed sequence from its parts, checking that they fit: `batch_sizes` not empty,
    /// none zero, never increasing; `data.dim(0) == Σ batch_sizes`; `sorted_indices`, when given,
    /// a permutation of `0..batch_sizes[0]`.
    pub fn new(data: Tensor, batch_sizes: Vec<usize>, sorted_indices: Option<Vec<usize>>) -> Result<Self> {
        const NAME: &str = "PackedSequence";
        if batch_sizes.is_empty() {
            return Err(Error::shape(NAME, "batch_sizes is empty", "pack at least one sequence of one step"));
        }
        if let Some(t) = batch_sizes.iter().position(|&b| b == 0) {
            return Err(Error::shape(
                NAME,
                format!("batch_sizes[{t}] is 0; every step must hold at least one sequence"),
                "drop trailing empty steps from batch_sizes (build it with pack_padded_sequence)",
            ));
        }
        if let Some(t) = batch_sizes.windows(2).position(|w| w[1] > w[0]) {
            return Err(Error::shape(
                NAME,
                format!(
                    "batch_sizes must not increase, got batch_sizes[{t}] = {} then {}",
                    batch_sizes[t],
                    batch_sizes[t + 1]
                ),
                "sort the sequences by decreasing length (pack_padded_sequence does it with enforce_sorted = false)",
            ));
        }
        let rows: usize = batch_sizes.iter().sum();
        if data.rank() == 0 || data.dim(0)? != rows {
            return Err(Error::shape(
                NAME,
                format!("data must be (N, *) with N = sum(batch_sizes) = {rows}, got shape {:?}", data.dims()),
                "pass the data rows of every step, one step after another",
            ));
        }
        let batch = batch_sizes[0];
        let unsorted_indices = match &sorted_indices {
            Some(sorted) => Some(inverse_permutation(NAME, sorted, batch)?),
            None => None,
        };
        Ok(Self { data, batch_sizes, sorted_indices, unsorted_indices })
    }

    /// The packed rows, `(N, *)`.
    pub fn data(&self) -> &Tensor {
        &self.data
    }

    /// How many sequences run at each step.
    pub fn batch_sizes(&self) -> &[usize] {
        &self.batch_sizes
    }

    /// The caller's index of each sequence in sorted (decreasing length) order, if the batch was
    /// reordered.
    pub fn sorted_indices(&self) -> Option<&[usize]> {
        self.sorted_indices.as_deref()
    }

    /// The inverse of [`sorted_indices`](Self::sorted_indices): the sorted position of each of
    /// the caller's sequences.
    pub fn unsorted_indices(&self) -> Option<&[usize]> {
        self.unsorted_indices.as_deref()
    }

    /// The number of sequences, `B`.
    pub fn batch(&self) -> usize {
        self.batch_sizes[0]
    }

    /// The longest sequence's length, `T`.
    pub fn max_len(&self) -> usize {
        self.batch_sizes.len()
    }

    /// Each sequence's length, in the caller's order.
    pub fn lengths(&self) -> Vec<usize> {
        let sorted = sorted_lengths(&self.batch_sizes);
        match &self.unsorted_indices {
            Some(unsorted) => unsorted.iter().map(|&j| sorted[j]).collect(),
            None => sorted,
        }
    }

    /// The same layout over other rows, e.g. a layer's output applied row-wise (a `Linear` on
    /// `data`); `data.dim(0)` must be unchanged.
    pub fn with_data(&self, data: Tensor) -> Result<Self> {
        if data.rank() == 0 || data.dim(0)? != self.data.dim(0)? {
            return Err(Error::shape(
                "PackedSequence",
                format!("with_data needs {} rows, got shape {:?}", self.data.dim(0)?, data.dims()),
                "keep the row count: apply only row-wise operations to the packed data",
            ));
        }
        Ok(Self { data, ..self.clone() })
    }

    /// The sorted order of the caller's sequences (identity when the batch came sorted).
    pub(crate) fn order(&self) -> Vec<usize> {
        self.sorted_indices.clone().unwrap_or_else(|| (0..self.batch()).collect())
    }
}

/// The inverse of `perm`, which must be a permutation of `0..n`.
fn inverse_permutation(name: &'static str, perm: &[usize], n: usize) -> Result<Vec<usize>> {
    let mut inverse = vec![usize::MAX; n];
    if perm.len() != n {
        return Err(Error::shape(
            name,
            format!("sorted_indices must hold {n} entries (one per sequence), got {}", perm.len()),
            "pass a permutation of 0..batch",
        ));
    }
    for (j, &b) in perm.iter().enumerate() {
        if b >= n || inverse[b] != usize::MAX {
            return Err(Error::shape(
                name,
                format!("sorted_indices must be a permutation of 0..{n}, got {perm:?}"),
                "pass each sequence index exactly once",
            ));
        }
        inverse[b] = j;
    }
    Ok(inverse)
}

/// The lengths of the sorted sequences described by `batch_sizes`.
fn sorted_lengths(batch_sizes: &[usize]) -> Vec<usize> {
    let batch = batch_sizes.first().copied().unwrap_or(0);
    (0..batch).map(|j| batch_sizes.iter().take_while(|&&b| b > j).count()).collect()
}

/// The caller's sequences in order of decreasing length; equal lengths keep their order.
pub(crate) fn sorted_order(lengths: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
    order
}

/// `batch_sizes` of sequences of `lengths` (any order).
pub(crate) fn batch_sizes_of(lengths: &[usize]) -> Vec<usize> {
    let steps = lengths.iter().copied().max().unwrap_or(0);
    let mut sizes = vec![0; steps];
    for &len in lengths {
        for size in &mut sizes[..len] {
            *size += 1;
        }
    }
    sizes
}

/// How a padded batch `(T, B, *)` (or `(B, T, *)`) maps onto packed rows.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub(crate) steps: usize,
    pub(crate) batch: usize,
    pub(crate) batch_first: bool,
    pub(crate) side: PaddingSide,
    pub(crate) lengths: Vec<usize>,
    pub(crate) order: Vec<usize>,
    pub(crate) batch_sizes: Vec<usize>,
}

impl Layout {
    /// Checks `lengths` against a padded batch of `steps × batch` and sorts them.
    pub(crate) fn new(
        name: &'static str,
        steps: usize,
        batch: usize,
        batch_first: bool,
        side: PaddingSide,
        lengths: &[usize],
    ) -> Result<Self> {
        check_lengths(name, lengths, batch, steps)?;
        let order = sorted_order(lengths);
        let batch_sizes = batch_sizes_of(lengths);
        Ok(Self { steps, batch, batch_first, side, lengths: lengths.to_vec(), order, batch_sizes })
    }

    /// The layout of a packed sequence padded to `steps`.
    fn of_packed(packed: &PackedSequence, steps: usize, batch_first: bool) -> Self {
        Self {
            steps,
            batch: packed.batch(),
            batch_first,
            side: PaddingSide::Right,
            lengths: packed.lengths(),
            order: packed.order(),
            batch_sizes: packed.batch_sizes.clone(),
        }
    }

    /// The row of step `t` of sequence `b` in the padded batch flattened over its first two dims.
    fn padded_row(&self, t: usize, b: usize) -> usize {
        let t = match self.side {
            PaddingSide::Right => t,
            PaddingSide::Left => self.steps - self.lengths[b] + t,
        };
        if self.batch_first {
            b * self.steps + t
        } else {
            t * self.batch + b
        }
    }

    /// For every packed row, the padded row it comes from.
    fn gather_index(&self) -> Vec<i64> {
        let mut index = Vec::with_capacity(self.lengths.iter().sum());
        for (t, &size) in self.batch_sizes.iter().enumerate() {
            index.extend(self.order[..size].iter().map(|&b| self.padded_row(t, b) as i64));
        }
        index
    }

    /// For every padded row, the packed row it holds, or `N` (one past the last) for padding.
    fn scatter_index(&self) -> Vec<i64> {
        let rows: usize = self.batch_sizes.iter().sum();
        let mut index = vec![rows as i64; self.steps * self.batch];
        let mut row = 0;
        for (t, &size) in self.batch_sizes.iter().enumerate() {
            for &b in &self.order[..size] {
                index[self.padded_row(t, b)] = row as i64;
                row += 1;
            }
        }
        index
    }

    /// The packed rows `(N, *)` of a padded batch.
    pub(crate) fn pack(&self, padded: &Tensor) -> Result<Tensor> {
        let flat = padded.contiguous()?.flatten(0, 1)?;
        let index = Tensor::new(self.gather_index(), padded.device())?;
        Ok(flat.index_select(&index, 0)?)
    }

    /// The padded batch of packed rows `(N, *)`, `value` at the padding.
    pub(crate) fn pad(&self, rows: &Tensor, value: f64) -> Result<Tensor> {
        let mut pad_shape = rows.dims().to_vec();
        pad_shape[0] = 1;
        let pad = Tensor::zeros(pad_shape.as_slice(), rows.dtype(), rows.device())?.affine(1.0, value)?;
        let index = Tensor::new(self.scatter_index(), rows.device())?;
        let padded = Tensor::cat(&[&rows.contiguous()?, &pad], 0)?.index_select(&index, 0)?;
        let mut shape = vec![self.steps, self.batch];
        if self.batch_first {
            shape.swap(0, 1);
        }
        shape.extend_from_slice(&rows.dims()[1..]);
        Ok(padded.reshape(shape)?)
    }

    /// `order` as an index tensor, to put per-sequence tensors in sorted order.
    pub(crate) fn order_index(&self, device: &candle_core::Device) -> Result<Tensor> {
        Ok(Tensor::new(self.order.iter().map(|&b| b as u32).collect::<Vec<_>>(), device)?)
    }

    /// The inverse of `order` as an index tensor, to put them back in the caller's order.
    pub(crate) fn unorder_index(&self, device: &candle_core::Device) -> Result<Tensor> {
        let mut inverse = vec![0u32; self.order.len()];
        for (j, &b) in self.order.iter().enumerate() {
            inverse[b] = j as u32;
        }
        Ok(Tensor::new(inverse, device)?)
    }
}

/// Checks one length per sequence, each in `1..=steps`.
fn check_lengths(name: &'static str, lengths: &[usize], batch: usize, steps: usize) -> Result<()> {
    if batch == 0 || steps == 0 {
        return Err(Error::shape(
            name,
            format!("Cannot pack empty tensors: the padded input has {steps} steps and {batch} sequences"),
            "pass at least one sequence of at least one step",
        ));
    }
    if lengths.len() != batch {
        return Err(Error::shape(
            name,
            format!(
                "Expected `len(lengths)` to be equal to batch_size, but got {} (batch_size={batch})",
                lengths.len()
            ),
            "pass one length per sequence of the batch",
        ));
    }
    if let Some(b) = lengths.iter().position(|&len| len == 0) {
        return Err(Error::shape(
            name,
            format!("Length of all samples has to be greater than 0, but lengths[{b}] is 0"),
            "drop empty sequences from the batch before packing",
        ));
    }
    if let Some(b) = lengths.iter().position(|&len| len > steps) {
        return Err(Error::shape(
            name,
            format!(
                "lengths[{b}] = {} is longer than the padded input, which has {steps} steps (PyTorch would \
                 silently truncate it)",
                lengths[b]
            ),
            "check the lengths, or pad the batch to the longest sequence",
        ));
    }
    Ok(())
}

/// Checks that a padded batch has at least `(T, B)` leading dimensions; returns `(T, B)`.
fn padded_dims(name: &'static str, input: &Tensor, batch_first: bool) -> Result<(usize, usize)> {
    if input.rank() < 2 {
        return Err(Error::shape(
            name,
            format!("expected a padded batch (T, B, *) or (B, T, *), got shape {:?}", input.dims()),
            "add the batch dimension (unsqueeze) before packing",
        ));
    }
    let (a, b) = (input.dim(0)?, input.dim(1)?);
    Ok(if batch_first { (b, a) } else { (a, b) })
}

/// Packs a padded batch `(T, B, *)` (`(B, T, *)` with `batch_first`) of sequences of `lengths`
/// (right padding). With `enforce_sorted` the lengths must already decrease; otherwise they are
/// sorted here and the order is kept in `sorted_indices`. PyTorch's `pack_padded_sequence`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use recur::pack_padded_sequence;
/// // [[1, 2, 3], [4, 5, 0], [6, 0, 0]] as (B, T) = (3, 3)
/// let x = Tensor::new(&[[1f32, 2., 3.], [4., 5., 0.], [6., 0., 0.]], &Device::Cpu)?;
/// let packed = pack_padded_sequence(&x, &[3, 2, 1], true, true)?;
/// assert_eq!(packed.data().to_vec1::<f32>()?, [1., 4., 6., 2., 5., 3.]);
/// assert_eq!(packed.batch_sizes(), [3, 2, 1]);
/// # Ok::<(), recur::Error>(())
/// ```
pub fn pack_padded_sequence(
    input: &Tensor,
    lengths: &[usize],
    batch_first: bool,
    enforce_sorted: bool,
) -> Result<PackedSequence> {
    const NAME: &str = "pack_padded_sequence";
    let (steps, batch) = padded_dims(NAME, input, batch_first)?;
    let layout = Layout::new(NAME, steps, batch, batch_first, PaddingSide::Right, lengths)?;
    if enforce_sorted {
        if let Some(b) = lengths.windows(2).position(|w| w[1] > w[0]) {
            return Err(Error::shape(
                NAME,
                format!(
                    "`lengths` array must be sorted in decreasing order when `enforce_sorted` is True, got lengths[{b}] \
                     = {} before lengths[{}] = {}",
                    lengths[b],
                    b + 1,
                    lengths[b + 1]
                ),
                "pass enforce_sorted = false to let the layout sort the batch, or sort it by decreasing length",
            ));
        }
    }
    let data = layout.pack(input)?;
    let sorted = if enforce_sorted { None } else { Some(layout.order.clone()) };
    PackedSequence::new(data, layout.batch_sizes, sorted)
}

/// Pads a packed batch back to `(T, B, *)` (`(B, T, *)` with `batch_first`), in the caller's
/// order, `padding_value` at the padding; `T` is the longest length, or `total_length` when
/// given (it may not be shorter). Returns the padded batch and the lengths. PyTorch's
/// `pad_packed_sequence`.
pub fn pad_packed_sequence(
    sequence: &PackedSequence,
    batch_first: bool,
    padding_value: f64,
    total_length: Option<usize>,
) -> Result<(Tensor, Vec<usize>)> {
    let longest = sequence.max_len();
    let steps = total_length.unwrap_or(longest);
    if steps < longest {
        return Err(Error::shape(
            "pad_packed_sequence",
            format!(
                "Expected total_length to be at least the length of the longest sequence in input, but got \
                 total_length={steps} and max sequence length being {longest}"
            ),
            "pass total_length >= the longest length, or None to pad to the longest",
        ));
    }
    let layout = Layout::of_packed(sequence, steps, batch_first);
    let padded = layout.pad(&sequence.data, padding_value)?;
    Ok((padded, layout.lengths))
}

/// Checks a list of sequences `(L_i, *)`: not empty, same trailing shape, dtype and device.
fn check_sequences(name: &'static str, sequences: &[Tensor]) -> Result<()> {
    let Some(first) = sequences.first() else {
        return Err(Error::shape(name, "got an empty list of sequences", "pass at least one sequence"));
    };
    for (i, s) in sequences.iter().enumerate() {
        if s.rank() == 0 {
            return Err(Error::shape(
                name,
                format!("sequence {i} is a scalar; each sequence must be (L, *)"),
                "give every sequence a time dimension first",
            ));
        }
        if s.dims()[1..] != first.dims()[1..] {
            return Err(Error::shape(
                name,
                format!(
                    "sequence {i} has shape {:?} but sequence 0 has {:?}; all must share the dimensions after the \
                     first",
                    s.dims(),
                    first.dims()
                ),
                "give every sequence the same feature shape",
            ));
        }
        if s.dtype() != first.dtype() || !s.device().same_device(first.device()) {
            return Err(Error::shape(
                name,
                format!("sequence {i} is {:?} on {:?}, sequence 0 is {:?}", s.dtype(), s.device(), first.dtype()),
                "convert every sequence to one dtype and device",
            ));
        }
    }
    Ok(())
}

/// Stacks sequences `(L_i, *)` into a padded batch `(T, B, *)` (`(B, T, *)` with
/// `batch_first`), `T = max L_i`, `padding_value` after (or, with [`PaddingSide::Left`], before)
/// each sequence. PyTorch's `pad_sequence`.
pub fn pad_sequence(
    sequences: &[Tensor],
    batch_first: bool,
    padding_value: f64,
    padding_side: PaddingSide,
) -> Result<Tensor> {
    check_sequences("pad_sequence", sequences)?;
    let steps = sequences.iter().map(|s| s.dim(0)).collect::<candle_core::Result<Vec<_>>>()?;
    let longest = steps.iter().copied().max().unwrap_or(0);
    let mut padded = Vec::with_capacity(sequences.len());
    for (s, &len) in sequences.iter().zip(&steps) {
        if len == longest {
            padded.push(s.clone());
            continue;
        }
        let mut shape = s.dims().to_vec();
        shape[0] = longest - len;
        let pad = Tensor::zeros(shape.as_slice(), s.dtype(), s.device())?.affine(1.0, padding_value)?;
        let parts = match padding_side {
            PaddingSide::Right => [s, &pad],
            PaddingSide::Left => [&pad, s],
        };
        padded.push(Tensor::cat(&parts, 0)?);
    }
    Ok(Tensor::stack(&padded, if batch_first { 0 } else { 1 })?)
}

/// Packs sequences `(L_i, *)`, each at least one step long. PyTorch's `pack_sequence`.
pub fn pack_sequence(sequences: &[Tensor], enforce_sorted: bool) -> Result<PackedSequence> {
    check_sequences("pack_sequence", sequences)?;
    let lengths = sequences.iter().map(|s| s.dim(0)).collect::<candle_core::Result<Vec<_>>>()?;
    let padded = pad_sequence(sequences, false, 0.0, PaddingSide::Right)?;
    pack_padded_sequence(&padded, &lengths, false, enforce_sorted)
}

/// The sequences of a packed batch, `(L_i, *)` each, in the caller's order. PyTorch's
/// `unpack_sequence`.
pub fn unpack_sequence(sequence: &PackedSequence) -> Result<Vec<Tensor>> {
    let sorted = sorted_lengths(&sequence.batch_sizes);
    let starts: Vec<usize> =
        sequence.batch_sizes.iter().scan(0, |at, &n| Some(std::mem::replace(at, *at + n))).collect();
    let device = sequence.data.device();
    let data = sequence.data.contiguous()?;
    let mut out = Vec::with_capacity(sequence.batch());
    for b in 0..sequence.batch() {
        let j = sequence.unsorted_indices.as_ref().map_or(b, |u| u[b]);
        let rows: Vec<u32> = (0..sorted[j]).map(|t| (starts[t] + j) as u32).collect();
        out.push(data.index_select(&Tensor::new(rows, device)?, 0)?);
    }
    Ok(out)
}

/// The sequences of a right-padded batch `(T, B, *)` (`(B, T, *)` with `batch_first`), cut to
/// their `lengths`. PyTorch's `unpad_sequence`.
pub fn unpad_sequence(padded: &Tensor, lengths: &[usize], batch_first: bool) -> Result<Vec<Tensor>> {
    const NAME: &str = "unpad_sequence";
    let (steps, batch) = padded_dims(NAME, padded, batch_first)?;
    check_lengths(NAME, lengths, batch, steps)?;
    let batch_dim = if batch_first { 0 } else { 1 };
    lengths
        .iter()
        .enumerate()
        .map(|(b, &len)| Ok(padded.narrow(batch_dim, b, 1)?.squeeze(batch_dim)?.narrow(0, 0, len)?))
        .collect()
}

/// Lengths (and padding side) from a `(T, B)` (or `(B, T)` with `batch_first`) mask whose
/// non-zero entries mark real steps: each sequence's real steps must be contiguous and start at
/// step 0 (right padding) — or all end at the last step (left padding).
pub fn lengths_from_mask(mask: &Tensor, batch_first: bool) -> Result<(Vec<usize>, PaddingSide)> {
    const NAME: &str = "lengths_from_mask";
    if mask.rank() != 2 {
        return Err(Error::shape(
            NAME,
            format!("expected a 2-D mask (T, B) or (B, T), got shape {:?}", mask.dims()),
            "pass one 0/1 entry per step and sequence",
        ));
    }
    let mask = if batch_first { mask.clone() } else { mask.t()? };
    let rows = mask.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let mut lengths = Vec::with_capacity(rows.len());
    let (mut right, mut left) = (true, true);
    for row in &rows {
        let len = row.iter().filter(|&&v| v != 0.0).count();
        right &= row.iter().take(len).all(|&v| v != 0.0);
        left &= row.iter().rev().take(len).all(|&v| v != 0.0);
        lengths.push(len);
    }
    let side = if right {
        PaddingSide::Right
    } else if left {
        PaddingSide::Left
    } else {
        return Err(Error::shape(
            NAME,
            "the mask's real steps are neither all at the start nor all at the end of their sequences",
            "use a mask with the real steps first (right padding) or last (left padding) in every sequence",
        ));
    };
    Ok((lengths, side))
}

/// A padded batch's lengths, which end holds the padding, and the value the layer writes at the
/// padded positions of its output; see the layers' `forward_padded`.
#[derive(Clone, Copy, Debug)]
pub struct Padding<'a> {
    pub(crate) lengths: &'a [usize],
    pub(crate) side: PaddingSide,
    pub(crate) value: f64,
}

impl<'a> Padding<'a> {
    /// Sequences of `lengths` (in the batch's own order, no sorting needed), padded after their
    /// last step; zeros at the padded output positions.
    pub fn right(lengths: &'a [usize]) -> Self {
        Self { lengths, side: PaddingSide::Right, value: 0.0 }
    }

    /// Sequences of `lengths`, padded before their first step (their last step is the batch's
    /// last); zeros at the padded output positions.
    pub fn left(lengths: &'a [usize]) -> Self {
        Self { lengths, side: PaddingSide::Left, value: 0.0 }
    }

    /// Sequences of `lengths` padded on `side`.
    pub fn new(lengths: &'a [usize], side: PaddingSide) -> Self {
        Self { lengths, side, value: 0.0 }
    }

    /// Writes `value` at the padded output positions instead of zeros.
    pub fn with_value(self, value: f64) -> Self {
        Self { value, ..self }
    }
}
