//! Requantizing a GGUF model with llama.cpp's `llama_model_quantize` (not wrapped by
//! `llama-cpp-2`): the one unsafe call over `llama-cpp-sys-2`, behind [`quantize_model`].
//! Used to build the requantized copies of the verification detection matrix.

use std::ffi::CString;
use std::path::Path;

use crate::error::RuntimeError;

/// Target types for [`quantize_model`] (llama.cpp `llama_ftype`, llama.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantType {
    /// `LLAMA_FTYPE_MOSTLY_F16` (1).
    F16,
    /// `LLAMA_FTYPE_MOSTLY_Q4_0` (2).
    Q4_0,
    /// `LLAMA_FTYPE_MOSTLY_Q8_0` (7).
    Q8_0,
}

impl QuantType {
    fn ftype(self) -> llama_cpp_sys_2::llama_ftype {
        match self {
            QuantType::F16 => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_F16,
            QuantType::Q4_0 => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q4_0,
            QuantType::Q8_0 => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q8_0,
        }
    }
}

/// Writes `src` requantized to `ty` at `dst` (requantizing already-quantized tensors is
/// allowed), with `threads` worker threads.
///
/// # Errors
/// [`RuntimeError::InvalidRequest`] for paths with NUL bytes; [`RuntimeError::Backend`] when
/// llama.cpp fails (unreadable input, unwritable output: its log says which).
pub fn quantize_model(
    src: &Path,
    dst: &Path,
    ty: QuantType,
    threads: u32,
) -> Result<(), RuntimeError> {
    crate::llama::init_backend()?;
    let c = |p: &Path| {
        CString::new(p.to_string_lossy().as_bytes()).map_err(|_| {
            RuntimeError::InvalidRequest(format!("path {} contains a NUL byte", p.display()))
        })
    };
    let (src_c, dst_c) = (c(src)?, c(dst)?);
    // SAFETY: llama_model_quantize_default_params returns a plain struct by value.
    let mut params = unsafe { llama_cpp_sys_2::llama_model_quantize_default_params() };
    params.nthread = threads.max(1) as i32;
    params.ftype = ty.ftype();
    params.allow_requantize = true;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call; params is a
    // fully initialised struct whose pointer fields are the defaults (null).
    let rc =
        unsafe { llama_cpp_sys_2::llama_model_quantize(src_c.as_ptr(), dst_c.as_ptr(), &params) };
    if rc != 0 {
        return Err(RuntimeError::Backend(format!(
            "llama_model_quantize {} -> {} ({ty:?}) failed with {rc}",
            src.display(),
            dst.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let r = quantize_model(
            &dir.path().join("missing.gguf"),
            &dir.path().join("out.gguf"),
            QuantType::Q8_0,
            1,
        );
        assert!(matches!(r, Err(RuntimeError::Backend(_))), "{r:?}");
    }
}
