//! Value types of circuit inputs, outputs and nodes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Widest integer a circuit may use, in bits.
pub const MAX_WIDTH: u8 = 64;

/// The type of one encrypted scalar: a boolean or a two's complement integer.
///
/// Integer widths are even numbers from 2 to 64 bits: tfhe-rs radix integers are made of 2-bit
/// blocks (the default parameters carry 2 message bits per block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScalarType {
    Bool,
    Uint(u8),
    Int(u8),
}

impl ScalarType {
    /// Builds an unsigned type, checking the width.
    pub fn uint(bits: u8) -> Result<Self, TypeError> {
        check_width(bits).map(|()| Self::Uint(bits))
    }

    /// Builds a signed type, checking the width.
    pub fn int(bits: u8) -> Result<Self, TypeError> {
        check_width(bits).map(|()| Self::Int(bits))
    }

    /// Number of bits of the value (1 for `bool`).
    pub fn bits(self) -> u8 {
        match self {
            Self::Bool => 1,
            Self::Uint(b) | Self::Int(b) => b,
        }
    }

    /// Number of 2-bit radix blocks tfhe-rs uses for the value (1 for `bool`).
    pub fn blocks(self) -> usize {
        match self {
            Self::Bool => 1,
            Self::Uint(b) | Self::Int(b) => usize::from(b / 2),
        }
    }

    pub fn is_signed(self) -> bool {
        matches!(self, Self::Int(_))
    }

    pub fn is_integer(self) -> bool {
        !matches!(self, Self::Bool)
    }

    /// Mask of the value's bits in a `u64`.
    pub fn mask(self) -> u64 {
        match self.bits() {
            64 => u64::MAX,
            b => (1u64 << b) - 1,
        }
    }

    /// Interprets a bit pattern of this type as a signed 128-bit number.
    pub fn to_i128(self, bits: u64) -> i128 {
        let bits = bits & self.mask();
        match self {
            Self::Int(w) => {
                let shift = 64 - u32::from(w);
                i128::from(((bits << shift) as i64) >> shift)
            }
            _ => i128::from(bits),
        }
    }

    /// Converts a number to this type's bit pattern, if it is in range.
    pub fn from_i128(self, value: i128) -> Option<u64> {
        let (lo, hi) = self.range();
        (lo..=hi)
            .contains(&value)
            .then(|| (value as u64) & self.mask())
    }

    /// Smallest and largest value of the type.
    pub fn range(self) -> (i128, i128) {
        match self {
            Self::Bool => (0, 1),
            Self::Uint(w) => (0, (1i128 << w) - 1),
            Self::Int(w) => (-(1i128 << (w - 1)), (1i128 << (w - 1)) - 1),
        }
    }
}

fn check_width(bits: u8) -> Result<(), TypeError> {
    if (2..=MAX_WIDTH).contains(&bits) && bits.is_multiple_of(2) {
        Ok(())
    } else {
        Err(TypeError(format!(
            "unsupported integer width {bits}: widths are even numbers from 2 to {MAX_WIDTH}"
        )))
    }
}

/// A type name that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TypeError(pub String);

impl fmt::Display for ScalarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool => f.write_str("bool"),
            Self::Uint(b) => write!(f, "u{b}"),
            Self::Int(b) => write!(f, "i{b}"),
        }
    }
}

impl FromStr for ScalarType {
    type Err = TypeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "bool" {
            return Ok(Self::Bool);
        }
        let bad = || TypeError(format!("unknown type `{s}` (expected bool, uN or iN)"));
        let (kind, digits) = s.split_at_checked(1).ok_or_else(bad)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 3 {
            return Err(bad());
        }
        let bits: u8 = digits.parse().map_err(|_| bad())?;
        match kind {
            "u" => Self::uint(bits),
            "i" => Self::int(bits),
            _ => Err(bad()),
        }
    }
}

impl Serialize for ScalarType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ScalarType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The type of a circuit input or output: a scalar, or a fixed-length vector of scalars.
///
/// Written `u16` or `u16[100]` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IoType {
    /// Element type.
    pub ty: ScalarType,
    /// `None` for a scalar, `Some(n)` for a vector of `n` elements.
    pub len: Option<u32>,
}

impl IoType {
    pub fn scalar(ty: ScalarType) -> Self {
        Self { ty, len: None }
    }

    pub fn vector(ty: ScalarType, len: u32) -> Self {
        Self { ty, len: Some(len) }
    }

    /// Number of scalar elements.
    pub fn count(&self) -> usize {
        self.len.map_or(1, |n| n as usize)
    }
}

impl fmt::Display for IoType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.len {
            None => write!(f, "{}", self.ty),
            Some(n) => write!(f, "{}[{n}]", self.ty),
        }
    }
}

impl FromStr for IoType {
    type Err = TypeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some(open) = s.find('[') else {
            return Ok(Self::scalar(s.parse()?));
        };
        let ty = s[..open].parse()?;
        let len = s[open + 1..]
            .strip_suffix(']')
            .filter(|d| !d.is_empty() && d.len() <= 9 && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| TypeError(format!("bad vector type `{s}` (expected e.g. u16[100])")))?;
        Ok(Self::vector(ty, len))
    }
}

impl Serialize for IoType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IoType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_types() {
        for s in ["bool", "u2", "u10", "u64", "i8", "i64"] {
            assert_eq!(s.parse::<ScalarType>().unwrap().to_string(), s);
        }
        for s in ["u1", "u3", "u66", "i0", "x8", "u", "", "u0008", "u+8"] {
            assert!(s.parse::<ScalarType>().is_err(), "{s}");
        }
    }

    #[test]
    fn signed_round_trip() {
        let t = ScalarType::Int(8);
        assert_eq!(t.to_i128(0xff), -1);
        assert_eq!(t.from_i128(-128), Some(0x80));
        assert_eq!(t.from_i128(128), None);
        assert_eq!(ScalarType::Uint(64).to_i128(u64::MAX), i128::from(u64::MAX));
    }

    #[test]
    fn io_types() {
        assert_eq!(
            "u16[100]".parse::<IoType>().unwrap(),
            IoType::vector(ScalarType::Uint(16), 100)
        );
        assert_eq!("bool".parse::<IoType>().unwrap().to_string(), "bool");
        for s in ["u16[]", "u16[x]", "u16[3", "[3]", "u16[1][2]"] {
            assert!(s.parse::<IoType>().is_err(), "{s}");
        }
    }
}
