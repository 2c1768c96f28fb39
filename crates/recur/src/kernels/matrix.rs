//! [`MatRef`], the strided matrix view every product reads its operands through.

/// A read-only strided matrix view: element `(r, c)` is `data[r * rs + c * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    /// The backing slice.
    pub data: &'a [T],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Row stride in elements.
    pub rs: usize,
    /// Column stride in elements.
    pub cs: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// The same view over an empty slice of another element type, for `MatRef { data, ..v.retyped() }`.
    pub(crate) fn retyped<U>(&self) -> MatRef<'static, U> {
        MatRef { data: &[], rows: self.rows, cols: self.cols, rs: self.rs, cs: self.cs }
    }

    /// A row-major contiguous `(rows, cols)` matrix.
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, rs: cols, cs: 1 }
    }

    /// A row-major matrix whose rows are `rs` elements apart.
    pub fn strided(data: &'a [T], rows: usize, cols: usize, rs: usize) -> Self {
        Self { data, rows, cols, rs, cs: 1 }
    }

    /// The transpose (no copy: strides are swapped).
    pub fn t(self) -> Self {
        Self { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    /// Panics if the view reaches past its slice.
    pub(crate) fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
            assert!(last < self.data.len(), "matrix view out of bounds");
        }
    }
}
