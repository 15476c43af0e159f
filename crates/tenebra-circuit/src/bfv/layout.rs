//! Where a vector's values sit in the slots of its ciphertexts; every layout follows from the
//! vector's length alone.

use serde::{Deserialize, Serialize};

/// Where a vector's values sit in the slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    Replicated { period: usize },
    Chunked { chunks: usize },
}

impl Layout {
    /// Ciphertexts the vector takes.
    pub fn ciphertexts(self) -> usize {
        match self {
            Layout::Replicated { .. } => 1,
            Layout::Chunked { chunks } => chunks,
        }
    }

    /// The slot values of a plain vector in this layout, one `Vec` of `degree` slots per
    /// ciphertext.
    pub fn place(self, v: &[i64], degree: usize) -> Vec<Vec<i64>> {
        match self {
            Layout::Replicated { period } => {
                vec![(0..degree)
                    .map(|s| v.get(s % period).copied().unwrap_or(0))
                    .collect()]
            }
            Layout::Chunked { chunks } => (0..chunks)
                .map(|c| {
                    (0..degree)
                        .map(|s| v.get(c * degree + s).copied().unwrap_or(0))
                        .collect()
                })
                .collect(),
        }
    }

    /// Reads a vector of `len` values back from its slots.
    pub fn read(self, slots: &[Vec<i64>], len: usize, degree: usize) -> Vec<i64> {
        (0..len)
            .map(|i| match self {
                Layout::Replicated { .. } => slots[0][i],
                Layout::Chunked { .. } => slots[i / degree][i % degree],
            })
            .collect()
    }
}

/// The layout of a vector of `len` values at ring degree `degree`.
pub fn layout_for(len: usize, degree: usize) -> Layout {
    if len <= degree / 2 {
        Layout::Replicated {
            period: period_of(len),
        }
    } else {
        Layout::Chunked {
            chunks: len.div_ceil(degree),
        }
    }
}

pub(crate) fn period_of(len: usize) -> usize {
    len.next_power_of_two()
}
