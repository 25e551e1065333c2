//! A GGUF header reader of our own: metadata and tensor descriptors, no tensor data.
//!
//! Every count, length and offset is checked against the bytes actually left in the file and
//! against fixed sanity limits before anything is allocated, so a truncated or hostile file
//! (the llama.cpp GGUF integer-overflow CVEs: huge tensor counts, string lengths, array counts,
//! dimension products, offsets past the end) gives a [`GgufError`] instead of a crash or a huge
//! allocation. Only GGUF versions 2 and 3 (64-bit counts) are accepted.
//!
//! ```no_run
//! let info = b3iq_runtime::gguf::GgufInfo::read_path("model.gguf".as_ref()).unwrap();
//! println!("{} {:?} {}", info.architecture, info.context_length, info.quantization);
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Magic bytes at the start of every GGUF file.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Most tensors accepted.
pub const MAX_TENSORS: u64 = 1 << 20;
/// Most metadata key/value pairs accepted.
pub const MAX_KV: u64 = 1 << 20;
/// Longest string accepted (keys, values, tensor names), in bytes.
pub const MAX_STRING_LEN: u64 = 16 << 20;
/// Longest key or tensor name accepted, in bytes.
pub const MAX_NAME_LEN: u64 = 64 << 10;
/// Most elements in one metadata array.
pub const MAX_ARRAY_LEN: u64 = 1 << 26;
/// Most dimensions of a tensor (GGML_MAX_DIMS).
pub const MAX_DIMS: u32 = 4;
/// Strings longer than this are not kept in [`GgufInfo::metadata`] (they are still validated).
const KEEP_STRING_LEN: u64 = 256 << 10;

/// Why a GGUF file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GgufError {
    /// The file does not start with `GGUF`.
    #[error("not a GGUF file (bad magic bytes {0:02x?}); check the path points at a .gguf model")]
    BadMagic([u8; 4]),
    /// Unsupported version.
    #[error("unsupported GGUF version {0}; only versions 2 and 3 are supported, re-convert the model with a current llama.cpp")]
    UnsupportedVersion(u32),
    /// The file ends before the structure it declares.
    #[error("file is truncated: needed {needed} bytes at offset {offset} but the file has {file_size}; the download is probably incomplete")]
    Truncated {
        /// Where the read started.
        offset: u64,
        /// How many bytes were needed.
        needed: u64,
        /// Total file size.
        file_size: u64,
    },
    /// A count or length exceeds a sanity limit.
    #[error("{what} is {value}, over the limit of {limit}; the file is corrupt or hostile")]
    LimitExceeded {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// Unknown metadata value type.
    #[error("metadata key `{key}` has unknown value type {type_id}")]
    BadValueType {
        /// The key.
        key: String,
        /// The type id.
        type_id: u32,
    },
    /// A string is not UTF-8.
    #[error("a string at offset {offset} is not valid UTF-8")]
    BadUtf8 {
        /// Where it starts.
        offset: u64,
    },
    /// A metadata key appears twice.
    #[error("duplicate metadata key `{0}`")]
    DuplicateKey(String),
    /// A metadata key has the wrong type for its well-known meaning.
    #[error("metadata key `{key}` has type {found}, expected {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// Found type.
        found: &'static str,
        /// Expected type.
        expected: &'static str,
    },
    /// A tensor descriptor is invalid.
    #[error("tensor `{name}`: {reason}")]
    BadTensor {
        /// Tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading the file failed.
    #[error("I/O error reading GGUF: {0}")]
    Io(String),
}

/// A metadata value. Arrays are summarised (type and length), plus their values when short.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum MetadataValue {
    /// Unsigned integer (u8/u16/u32/u64).
    Uint(u64),
    /// Signed integer (i8/i16/i32/i64).
    Int(i64),
    /// Float (f32/f64).
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// String (long strings are replaced by their length, see [`MetadataValue::LongString`]).
    String(String),
    /// A string too long to keep; its length in bytes.
    LongString(u64),
    /// An array.
    Array {
        /// Element type name.
        item_type: String,
        /// Number of elements.
        len: u64,
        /// Elements, kept when there are at most 64 scalar or short-string items.
        items: Vec<MetadataValue>,
    },
}

impl MetadataValue {
    fn type_name(&self) -> &'static str {
        match self {
            MetadataValue::Uint(_) => "uint",
            MetadataValue::Int(_) => "int",
            MetadataValue::Float(_) => "float",
            MetadataValue::Bool(_) => "bool",
            MetadataValue::String(_) | MetadataValue::LongString(_) => "string",
            MetadataValue::Array { .. } => "array",
        }
    }
    /// As an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetadataValue::Uint(v) => Some(v),
            MetadataValue::Int(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
    /// As a string, if it is a kept string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetadataValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// One tensor descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorInfo {
    /// Name.
    pub name: String,
    /// Dimensions (ne[0] first).
    pub dims: Vec<u64>,
    /// ggml type name (`q4_1`, `f32`, ...).
    pub ggml_type: String,
    /// Offset relative to the start of the data section.
    pub offset: u64,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Number of elements.
    pub elements: u64,
}

/// What the header says about a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GgufInfo {
    /// GGUF version (2 or 3).
    pub version: u32,
    /// File size in bytes.
    pub file_size: u64,
    /// Where tensor data starts.
    pub data_offset: u64,
    /// Data alignment.
    pub alignment: u64,
    /// `general.architecture` (empty if missing).
    pub architecture: String,
    /// `general.name` (empty if missing).
    pub name: String,
    /// `<arch>.context_length`.
    pub context_length: Option<u64>,
    /// `<arch>.embedding_length`.
    pub embedding_length: Option<u64>,
    /// `<arch>.block_count`.
    pub block_count: Option<u64>,
    /// Quantization: from `general.file_type`, else the dominant tensor type.
    pub quantization: String,
    /// Sum of tensor element counts.
    pub parameter_count: u64,
    /// Sum of tensor sizes.
    pub tensor_bytes: u64,
    /// Number of tensors.
    pub tensor_count: u64,
    /// Vocabulary size (`tokenizer.ggml.tokens` length), if present.
    pub vocab_size: Option<u64>,
    /// Whether `tokenizer.chat_template` is present.
    pub has_chat_template: bool,
    /// Tensor descriptors in file order.
    pub tensors: Vec<TensorInfo>,
    /// All metadata (arrays summarised, long strings replaced by their length).
    pub metadata: BTreeMap<String, MetadataValue>,
}

/// (block size in elements, bytes per block, name) for a ggml type id.
pub fn ggml_type_layout(type_id: u32) -> Option<(u64, u64, &'static str)> {
    Some(match type_id {
        0 => (1, 4, "f32"),
        1 => (1, 2, "f16"),
        2 => (32, 18, "q4_0"),
        3 => (32, 20, "q4_1"),
        6 => (32, 22, "q5_0"),
        7 => (32, 24, "q5_1"),
        8 => (32, 34, "q8_0"),
        9 => (32, 36, "q8_1"),
        10 => (256, 84, "q2_k"),
        11 => (256, 110, "q3_k"),
        12 => (256, 144, "q4_k"),
        13 => (256, 176, "q5_k"),
        14 => (256, 210, "q6_k"),
        15 => (256, 292, "q8_k"),
        16 => (256, 66, "iq2_xxs"),
        17 => (256, 74, "iq2_xs"),
        18 => (256, 98, "iq3_xxs"),
        19 => (256, 50, "iq1_s"),
        20 => (32, 18, "iq4_nl"),
        21 => (256, 110, "iq3_s"),
        22 => (256, 82, "iq2_s"),
        23 => (256, 136, "iq4_xs"),
        24 => (1, 1, "i8"),
        25 => (1, 2, "i16"),
        26 => (1, 4, "i32"),
        27 => (1, 8, "i64"),
        28 => (1, 8, "f64"),
        29 => (256, 56, "iq1_m"),
        30 => (1, 2, "bf16"),
        34 => (256, 54, "tq1_0"),
        35 => (256, 66, "tq2_0"),
        39 => (32, 17, "mxfp4"),
        _ => return None,
    })
}

/// The quantization name for a `general.file_type` value (llama_ftype).
pub fn file_type_name(ftype: u64) -> Option<&'static str> {
    Some(match ftype {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return None,
    })
}

struct Reader<R> {
    inner: R,
    pos: u64,
    size: u64,
}

impl<R: Read> Reader<R> {
    fn need(&self, n: u64) -> Result<(), GgufError> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(GgufError::Truncated { offset: self.pos, needed: n, file_size: self.size }),
        }
    }
    fn remaining(&self) -> u64 {
        self.size.saturating_sub(self.pos)
    }
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        self.need(N as u64)?;
        let mut b = [0u8; N];
        self.read_into(&mut b)?;
        Ok(b)
    }
    fn read_into(&mut self, buf: &mut [u8]) -> Result<(), GgufError> {
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                GgufError::Truncated { offset: self.pos, needed: buf.len() as u64, file_size: self.size }
            } else {
                GgufError::Io(e.to_string())
            }
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }
    fn skip(&mut self, n: u64) -> Result<(), GgufError> {
        self.need(n)?;
        let copied = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())
            .map_err(|e| GgufError::Io(e.to_string()))?;
        if copied != n {
            return Err(GgufError::Truncated { offset: self.pos, needed: n, file_size: self.size });
        }
        self.pos += n;
        Ok(())
    }
    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes::<4>()?))
    }
    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes::<8>()?))
    }
    /// Reads a length-prefixed string; `None` when it is longer than `keep` (then skipped).
    fn string(&mut self, what: &'static str, limit: u64, keep: u64) -> Result<Option<String>, GgufError> {
        let len = self.u64()?;
        if len > limit {
            return Err(GgufError::LimitExceeded { what, value: len, limit });
        }
        self.need(len)?;
        let start = self.pos;
        if len > keep {
            // Validate without keeping: read in chunks and check UTF-8 incrementally would be
            // costly; long strings (chat templates, licences) are checked in one buffer.
            let mut buf = vec![0u8; len as usize];
            self.read_into(&mut buf)?;
            if std::str::from_utf8(&buf).is_err() {
                return Err(GgufError::BadUtf8 { offset: start });
            }
            return Ok(None);
        }
        let mut buf = vec![0u8; len as usize];
        self.read_into(&mut buf)?;
        String::from_utf8(buf).map(Some).map_err(|_| GgufError::BadUtf8 { offset: start })
    }
}

fn value_type_name(t: u32) -> &'static str {
    match t {
        0 => "u8",
        1 => "i8",
        2 => "u16",
        3 => "i16",
        4 => "u32",
        5 => "i32",
        6 => "f32",
        7 => "bool",
        8 => "string",
        9 => "array",
        10 => "u64",
        11 => "i64",
        12 => "f64",
        _ => "unknown",
    }
}

/// Fixed byte size of a scalar value type (None for string/array/unknown).
fn scalar_size(t: u32) -> Option<u64> {
    Some(match t {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        _ => return None,
    })
}

fn read_scalar<R: Read>(r: &mut Reader<R>, t: u32) -> Result<MetadataValue, GgufError> {
    Ok(match t {
        0 => MetadataValue::Uint(r.bytes::<1>()?[0] as u64),
        1 => MetadataValue::Int(r.bytes::<1>()?[0] as i8 as i64),
        2 => MetadataValue::Uint(u16::from_le_bytes(r.bytes::<2>()?) as u64),
        3 => MetadataValue::Int(i16::from_le_bytes(r.bytes::<2>()?) as i64),
        4 => MetadataValue::Uint(r.u32()? as u64),
        5 => MetadataValue::Int(i32::from_le_bytes(r.bytes::<4>()?) as i64),
        6 => MetadataValue::Float(f32::from_le_bytes(r.bytes::<4>()?) as f64),
        7 => MetadataValue::Bool(r.bytes::<1>()?[0] != 0),
        10 => MetadataValue::Uint(r.u64()?),
        11 => MetadataValue::Int(i64::from_le_bytes(r.bytes::<8>()?)),
        12 => MetadataValue::Float(f64::from_le_bytes(r.bytes::<8>()?)),
        _ => unreachable_type(t)?,
    })
}

fn unreachable_type(t: u32) -> Result<MetadataValue, GgufError> {
    Err(GgufError::BadValueType { key: String::new(), type_id: t })
}

fn read_value<R: Read>(r: &mut Reader<R>, key: &str, t: u32) -> Result<MetadataValue, GgufError> {
    let bad_type = |type_id| GgufError::BadValueType { key: key.to_string(), type_id };
    if scalar_size(t).is_some() {
        return read_scalar(r, t);
    }
    match t {
        8 => Ok(match r.string("string length", MAX_STRING_LEN, KEEP_STRING_LEN)? {
            Some(s) => MetadataValue::String(s),
            None => MetadataValue::LongString(0),
        }),
        9 => {
            let item_t = r.u32()?;
            let len = r.u64()?;
            if len > MAX_ARRAY_LEN {
                return Err(GgufError::LimitExceeded { what: "array length", value: len, limit: MAX_ARRAY_LEN });
            }
            let keep = len <= 64;
            let mut items = Vec::new();
            if let Some(sz) = scalar_size(item_t) {
                let total = len.checked_mul(sz).ok_or(GgufError::LimitExceeded {
                    what: "array byte size",
                    value: u64::MAX,
                    limit: r.size,
                })?;
                r.need(total)?;
                if keep {
                    for _ in 0..len {
                        items.push(read_scalar(r, item_t)?);
                    }
                } else {
                    r.skip(total)?;
                }
            } else if item_t == 8 {
                // Each string needs at least its 8-byte length prefix.
                let min = len.saturating_mul(8);
                if min > r.remaining() {
                    return Err(GgufError::Truncated { offset: r.pos, needed: min, file_size: r.size });
                }
                for _ in 0..len {
                    let slen = r.u64()?;
                    if slen > MAX_STRING_LEN {
                        return Err(GgufError::LimitExceeded { what: "string length", value: slen, limit: MAX_STRING_LEN });
                    }
                    if keep && slen <= 1024 {
                        r.need(slen)?;
                        let start = r.pos;
                        let mut buf = vec![0u8; slen as usize];
                        r.read_into(&mut buf)?;
                        let s = String::from_utf8(buf).map_err(|_| GgufError::BadUtf8 { offset: start })?;
                        items.push(MetadataValue::String(s));
                    } else {
                        r.skip(slen)?;
                    }
                }
            } else if item_t == 9 {
                // Nested arrays are legal in the spec but unused by llama.cpp; refuse them
                // rather than recurse on attacker-chosen depth.
                return Err(GgufError::BadValueType { key: key.to_string(), type_id: 9 });
            } else {
                return Err(bad_type(item_t));
            }
            Ok(MetadataValue::Array { item_type: value_type_name(item_t).to_string(), len, items })
        }
        _ => Err(bad_type(t)),
    }
}

impl GgufInfo {
    /// Reads the header of a GGUF file on disk (reads metadata and tensor descriptors only).
    pub fn read_path(path: &Path) -> Result<Self, GgufError> {
        let f = File::open(path).map_err(|e| GgufError::Io(format!("{}: {e}", path.display())))?;
        let size = f.metadata().map_err(|e| GgufError::Io(format!("{}: {e}", path.display())))?.len();
        Self::read(BufReader::with_capacity(1 << 16, f), size)
    }

    /// Parses a header from bytes (the whole file, or at least a prefix; `file_size` is the
    /// length of the slice, so tensor data offsets are checked against it).
    pub fn parse(bytes: &[u8]) -> Result<Self, GgufError> {
        Self::read(bytes, bytes.len() as u64)
    }

    /// Reads a header from `reader`, whose total length is `file_size` bytes.
    pub fn read<R: Read>(reader: R, file_size: u64) -> Result<Self, GgufError> {
        let mut r = Reader { inner: reader, pos: 0, size: file_size };
        let magic = r.bytes::<4>()?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic(magic));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let tensor_count = r.u64()?;
        if tensor_count > MAX_TENSORS {
            return Err(GgufError::LimitExceeded { what: "tensor count", value: tensor_count, limit: MAX_TENSORS });
        }
        let kv_count = r.u64()?;
        if kv_count > MAX_KV {
            return Err(GgufError::LimitExceeded { what: "metadata count", value: kv_count, limit: MAX_KV });
        }
        // Each KV needs at least 8 (key len) + 4 (type) + 1 bytes; each tensor at least 8+4+8+4+8.
        let min = kv_count.saturating_mul(13).saturating_add(tensor_count.saturating_mul(32));
        if min > r.remaining() {
            return Err(GgufError::Truncated { offset: r.pos, needed: min, file_size });
        }

        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = r.string("key length", MAX_NAME_LEN, MAX_NAME_LEN)?.unwrap_or_default();
            let t = r.u32()?;
            let v = read_value(&mut r, &key, t).map_err(|e| match e {
                GgufError::BadValueType { type_id, .. } => GgufError::BadValueType { key: key.clone(), type_id },
                other => other,
            })?;
            if metadata.insert(key.clone(), v).is_some() {
                return Err(GgufError::DuplicateKey(key));
            }
        }

        let get_u64 = |k: &str| -> Result<Option<u64>, GgufError> {
            match metadata.get(k) {
                None => Ok(None),
                Some(v) => v.as_u64().map(Some).ok_or_else(|| GgufError::WrongType {
                    key: k.to_string(),
                    found: v.type_name(),
                    expected: "unsigned integer",
                }),
            }
        };
        let alignment = get_u64("general.alignment")?.unwrap_or(32);
        if alignment == 0 || !alignment.is_power_of_two() || alignment > (1 << 20) {
            return Err(GgufError::LimitExceeded { what: "general.alignment (must be a power of two)", value: alignment, limit: 1 << 20 });
        }

        let mut tensors = Vec::with_capacity(tensor_count.min(4096) as usize);
        let mut names = std::collections::HashSet::new();
        for _ in 0..tensor_count {
            let name = r.string("tensor name length", MAX_NAME_LEN, MAX_NAME_LEN)?.unwrap_or_default();
            let bad = |reason: String| GgufError::BadTensor { name: name.clone(), reason };
            let n_dims = r.u32()?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(bad(format!("has {n_dims} dimensions, expected 1..={MAX_DIMS}")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            let mut elements: u64 = 1;
            for _ in 0..n_dims {
                let d = r.u64()?;
                if d > i64::MAX as u64 {
                    return Err(bad(format!("dimension {d} is negative as int64")));
                }
                elements = elements
                    .checked_mul(d)
                    .filter(|e| *e <= i64::MAX as u64)
                    .ok_or_else(|| bad("element count overflows int64".into()))?;
                dims.push(d);
            }
            let type_id = r.u32()?;
            let (block, block_bytes, type_name) =
                ggml_type_layout(type_id).ok_or_else(|| bad(format!("unknown ggml type {type_id}")))?;
            if dims[0] % block != 0 {
                return Err(bad(format!("first dimension {} is not a multiple of the {type_name} block size {block}", dims[0])));
            }
            let size_bytes = (elements / block)
                .checked_mul(block_bytes)
                .ok_or_else(|| bad("byte size overflows".into()))?;
            let offset = r.u64()?;
            if offset % alignment != 0 {
                return Err(bad(format!("offset {offset} is not aligned to {alignment}")));
            }
            if !names.insert(name.clone()) {
                return Err(bad("duplicate tensor name".into()));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type: type_name.to_string(),
                offset,
                size_bytes,
                elements,
            });
        }
        let data_offset = r
            .pos
            .checked_add(alignment - 1)
            .map(|p| p / alignment * alignment)
            .ok_or(GgufError::Truncated { offset: r.pos, needed: alignment, file_size })?;
        // The data section must start inside the file: a header that runs up to (or past) the
        // end leaves no room for any tensor, even an empty one (found by the gguf_header fuzz
        // target: zero-sized tensors passed the range check with data_offset > file_size).
        if data_offset > file_size && !tensors.is_empty() {
            return Err(GgufError::Truncated { offset: r.pos, needed: data_offset - r.pos, file_size });
        }
        let data_len = file_size.saturating_sub(data_offset);
        let mut parameter_count: u64 = 0;
        let mut tensor_bytes: u64 = 0;
        let mut by_type: BTreeMap<&str, u64> = BTreeMap::new();
        for t in &tensors {
            let end = t.offset.checked_add(t.size_bytes);
            match end {
                Some(end) if end <= data_len => {}
                _ => {
                    return Err(GgufError::BadTensor {
                        name: t.name.clone(),
                        reason: format!(
                            "data [{}, +{}) lies past the end of the file (data section is {data_len} bytes); the file is truncated or corrupt",
                            t.offset, t.size_bytes
                        ),
                    })
                }
            }
            parameter_count = parameter_count.saturating_add(t.elements);
            tensor_bytes = tensor_bytes.saturating_add(t.size_bytes);
            *by_type.entry(t.ggml_type.as_str()).or_default() += t.size_bytes;
        }
        // Overlapping tensors are a sign of a crafted file.
        let mut spans: Vec<(u64, u64)> = tensors.iter().map(|t| (t.offset, t.offset + t.size_bytes)).collect();
        spans.sort_unstable();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(GgufError::BadTensor {
                    name: String::new(),
                    reason: format!("tensor data ranges overlap at offset {}", w[1].0),
                });
            }
        }

        let get_str = |k: &str| metadata.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let architecture = get_str("general.architecture");
        let arch_key = |suffix: &str| format!("{architecture}.{suffix}");
        let quantization = match get_u64("general.file_type")?.and_then(file_type_name) {
            Some(n) => n.to_string(),
            None => by_type
                .iter()
                .max_by_key(|(_, b)| **b)
                .map(|(t, _)| t.to_ascii_uppercase())
                .unwrap_or_default(),
        };
        let vocab_size = match metadata.get("tokenizer.ggml.tokens") {
            Some(MetadataValue::Array { len, .. }) => Some(*len),
            _ => None,
        };
        Ok(GgufInfo {
            version,
            file_size,
            data_offset,
            alignment,
            name: get_str("general.name"),
            context_length: get_u64(&arch_key("context_length"))?,
            embedding_length: get_u64(&arch_key("embedding_length"))?,
            block_count: get_u64(&arch_key("block_count"))?,
            has_chat_template: metadata.contains_key("tokenizer.chat_template"),
            architecture,
            quantization,
            parameter_count,
            tensor_bytes,
            tensor_count,
            vocab_size,
            tensors,
            metadata,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: u32, tensors: u64, kvs: u64) -> Vec<u8> {
        let mut b = GGUF_MAGIC.to_vec();
        b.extend(version.to_le_bytes());
        b.extend(tensors.to_le_bytes());
        b.extend(kvs.to_le_bytes());
        b
    }
    fn s(b: &mut Vec<u8>, v: &str) {
        b.extend((v.len() as u64).to_le_bytes());
        b.extend(v.as_bytes());
    }

    #[test]
    fn minimal_file_parses() {
        let mut b = header(3, 1, 1);
        s(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        s(&mut b, "llama");
        s(&mut b, "w");
        b.extend(1u32.to_le_bytes());
        b.extend(32u64.to_le_bytes());
        b.extend(3u32.to_le_bytes()); // q4_1
        b.extend(0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        b.extend([0u8; 20]);
        let info = GgufInfo::parse(&b).unwrap();
        assert_eq!(info.architecture, "llama");
        assert_eq!(info.tensors[0].size_bytes, 20);
        assert_eq!(info.quantization, "Q4_1");
        // One byte short of the tensor data.
        assert!(matches!(GgufInfo::parse(&b[..b.len() - 1]), Err(GgufError::BadTensor { .. })));
    }

    #[test]
    fn hostile_counts_are_refused_without_allocating() {
        assert!(matches!(GgufInfo::parse(&header(3, u64::MAX, 0)), Err(GgufError::LimitExceeded { .. })));
        assert!(matches!(GgufInfo::parse(&header(3, 0, u64::MAX)), Err(GgufError::LimitExceeded { .. })));
        assert!(matches!(GgufInfo::parse(&header(3, 1000, 1000)), Err(GgufError::Truncated { .. })));
        assert!(matches!(GgufInfo::parse(&header(1, 0, 0)), Err(GgufError::UnsupportedVersion(1))));
        assert!(matches!(GgufInfo::parse(b"GGML\x03\0\0\0"), Err(GgufError::BadMagic(_))));
        let mut b = header(3, 0, 1);
        b.extend(u64::MAX.to_le_bytes());
        b.extend([0u8; 16]);
        assert!(matches!(GgufInfo::parse(&b), Err(GgufError::LimitExceeded { .. })));
    }
}

/// Replays the `gguf_header` fuzz corpus (fuzz/corpus/gguf_header/, crash reproducers
/// included) with the fuzz target's invariants, so a fixed crash stays fixed.
#[cfg(test)]
mod fuzz_corpus {
    use super::*;

    #[test]
    fn replay_gguf_header_corpus() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/gguf_header");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let data = std::fs::read(e.path()).unwrap();
            if let Ok(info) = GgufInfo::parse(&data) {
                assert_eq!(info.tensors.len() as u64, info.tensor_count);
                assert!(info.data_offset <= info.file_size || info.tensors.is_empty(), "{}", e.path().display());
            }
            n += 1;
        }
        assert!(n >= 3, "the corpus has its seeds");
        let crash = std::fs::read(dir.join("regression-data-offset-past-end")).unwrap();
        assert!(matches!(GgufInfo::parse(&crash), Err(GgufError::Truncated { .. })));
    }
}
