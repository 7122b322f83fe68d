//! Build script: compiles the Envoy `.proto` sources shipped inside the
//! `envoy-types` crate into a `FileDescriptorSet` (`$OUT_DIR/envoy_descriptors.bin`),
//! loaded once by `src/envoy_json.rs`: canonical proto3 JSON, the check of everything
//! meshd sends against Envoy's `validate.rules`, and canonical resource versions.
//!
//! The proto root is `$AMIME_ENVOY_TYPES_PROTO` if set, otherwise the
//! `envoy-types-<version>/proto` directory in the cargo registry, with the version
//! taken from the workspace `Cargo.lock`. `cargo metadata` is deliberately not used:
//! it can block on the package-cache lock held by the parent `cargo build`.

use std::env;
use std::fs;
use std::path::PathBuf;

const PROTO_ROOT_ENV: &str = "AMIME_ENVOY_TYPES_PROTO";

/// Directories (relative to `data-plane-api`) whose `.proto` files are all compiled.
const PROTO_DIRS: &[&str] = &[
    "envoy/config/bootstrap/v3",
    "envoy/config/cluster/v3",
    "envoy/config/endpoint/v3",
    "envoy/config/listener/v3",
    "envoy/config/route/v3",
    "envoy/config/core/v3",
    "envoy/extensions/filters/network/http_connection_manager/v3",
    "envoy/extensions/filters/network/tcp_proxy/v3",
    // protox resolves relative type names against every file compiled so far,
    // not just the file's imports. local_rate_limit.proto refers to
    // `common.ratelimit.v3.X` (meaning envoy.extensions.common...), which breaks
    // once a file in package envoy.extensions.filters.common.* (imported by
    // fault.proto) is in the pool, so it must come before fault.
    "envoy/extensions/filters/http/local_ratelimit/v3",
    "envoy/extensions/filters/http/router/v3",
    "envoy/extensions/filters/http/fault/v3",
    "envoy/extensions/filters/http/cors/v3",
    "envoy/extensions/filters/listener/original_dst/v3",
    "envoy/extensions/filters/listener/tls_inspector/v3",
    "envoy/extensions/filters/listener/http_inspector/v3",
    "envoy/extensions/transport_sockets/tls/v3",
    "envoy/extensions/upstreams/http/v3",
    "envoy/extensions/access_loggers/file/v3",
    "envoy/extensions/access_loggers/stream/v3",
    "envoy/extensions/common/dynamic_forward_proxy/v3",
    "envoy/extensions/clusters/dynamic_forward_proxy/v3",
    "envoy/extensions/filters/http/dynamic_forward_proxy/v3",
    "envoy/extensions/network/dns_resolver/getaddrinfo/v3",
];

/// Individual files (relative to any include root) compiled in addition to `PROTO_DIRS`.
const PROTO_FILES: &[&str] = &["envoy/service/discovery/v3/discovery.proto", "envoy/admin/v3/config_dump.proto"];

/// Files compiled from a patched copy, for protox's name resolution: a relative type name
/// whose first component also names a package in scope (`common.…` inside
/// `envoy.extensions.clusters.*`, where `envoy.extensions.clusters.common` exists) is
/// spelled out in full.
const PATCHED_FILES: &[(&str, &str, &str)] = &[
    (
        "envoy/extensions/clusters/dynamic_forward_proxy/v3/cluster.proto",
        " common.dynamic_forward_proxy.v3.DnsCacheConfig ",
        " envoy.extensions.common.dynamic_forward_proxy.v3.DnsCacheConfig ",
    ),
    (
        "envoy/extensions/filters/http/dynamic_forward_proxy/v3/dynamic_forward_proxy.proto",
        " common.dynamic_forward_proxy.v3.DnsCacheConfig ",
        " envoy.extensions.common.dynamic_forward_proxy.v3.DnsCacheConfig ",
    ),
];

/// Sub-directories of the `envoy-types` proto root used as include paths.
/// `google/protobuf/*.proto` is provided by protox itself.
const INCLUDE_DIRS: &[&str] = &[
    "data-plane-api",
    "xds",
    "protoc-gen-validate",
    "googleapis",
    "cel-spec/proto",
    "opentelemetry-proto",
    "client_model",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed={PROTO_ROOT_ENV}");

    if let Err(msg) = run() {
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let proto_root = find_proto_root()?;

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let api_root = proto_root.join("data-plane-api");
    // Patched copies come first on the include path, so they shadow the originals.
    let overlay = out_dir.join("proto-overlay");
    for (file, from, to) in PATCHED_FILES {
        let original = api_root.join(file);
        let text = fs::read_to_string(&original).map_err(|e| format!("cannot read {}: {e}", original.display()))?;
        if !text.contains(from) {
            return Err(format!("{}: expected {from:?} to patch; update PATCHED_FILES", original.display()));
        }
        let patched = overlay.join(file);
        fs::create_dir_all(patched.parent().expect("a file has a parent"))
            .and_then(|()| fs::write(&patched, text.replace(from, to)))
            .map_err(|e| format!("cannot write {}: {e}", patched.display()))?;
    }
    let includes: Vec<PathBuf> = std::iter::once(overlay)
        .chain(INCLUDE_DIRS.iter().map(|d| proto_root.join(d)))
        .filter(|p| p.is_dir())
        .collect();
    if !api_root.is_dir() {
        return Err(format!(
            "{} does not look like an envoy-types proto root (no data-plane-api/ directory)",
            proto_root.display()
        ));
    }

    let mut files: Vec<String> = Vec::new();
    for dir in PROTO_DIRS {
        let mut in_dir: Vec<String> = fs::read_dir(api_root.join(dir))
            .map_err(|e| format!("cannot read {}: {e}", api_root.join(dir).display()))?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| name.ends_with(".proto"))
            .map(|name| format!("{dir}/{name}"))
            .collect();
        in_dir.sort();
        files.extend(in_dir);
    }
    files.extend(PROTO_FILES.iter().map(|f| f.to_string()));

    let mut compiler =
        protox::Compiler::new(&includes).map_err(|e| format!("protox: cannot set up include paths: {e}"))?;
    compiler.include_imports(true).include_source_info(false);
    for file in &files {
        compiler.open_file(file).map_err(|e| format!("protox: failed to compile {file}: {e:?}"))?;
    }
    let bytes = compiler.encode_file_descriptor_set();

    let out = out_dir.join("envoy_descriptors.bin");
    fs::write(&out, bytes).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(())
}

fn find_proto_root() -> Result<PathBuf, String> {
    if let Some(root) = env::var_os(PROTO_ROOT_ENV) {
        let root = PathBuf::from(root);
        return if root.is_dir() {
            Ok(root)
        } else {
            Err(format!("{PROTO_ROOT_ENV}={} is not a directory", root.display()))
        };
    }

    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?);
    let lock_path = manifest_dir.join("..").join("Cargo.lock");
    let lock = fs::read_to_string(&lock_path).map_err(|e| {
        format!(
            "cannot read {} to find the envoy-types version ({e}); \
             set {PROTO_ROOT_ENV} to the envoy-types `proto` directory",
            lock_path.display()
        )
    })?;
    let mut versions = envoy_types_versions(&lock);
    if versions.is_empty() {
        return Err(format!(
            "no envoy-types package in {}; set {PROTO_ROOT_ENV} to the envoy-types `proto` directory",
            lock_path.display()
        ));
    }
    // Prefer the newest version if the lock file holds several.
    versions.sort_by_key(|v| version_key(v));
    versions.reverse();

    let cargo_home = match env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home),
        None => PathBuf::from(env::var_os("HOME").ok_or("neither CARGO_HOME nor HOME is set")?).join(".cargo"),
    };
    let registry_src = cargo_home.join("registry").join("src");
    let mut registries: Vec<PathBuf> =
        fs::read_dir(&registry_src).map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    registries.sort();

    for version in &versions {
        for registry in &registries {
            let candidate = registry.join(format!("envoy-types-{version}")).join("proto");
            if candidate.is_dir() {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "envoy-types {} proto sources not found under {}/*/envoy-types-<version>/proto; \
         set {PROTO_ROOT_ENV} to the envoy-types `proto` directory",
        versions.join(", "),
        registry_src.display()
    ))
}

/// Versions of every `envoy-types` package listed in a `Cargo.lock`.
fn envoy_types_versions(lock: &str) -> Vec<String> {
    let mut versions = Vec::new();
    let mut in_envoy_types = false;
    for line in lock.lines().map(str::trim) {
        if line == "[[package]]" {
            in_envoy_types = false;
        } else if let Some(name) = toml_string(line, "name") {
            in_envoy_types = name == "envoy-types";
        } else if let Some(version) = toml_string(line, "version") {
            if in_envoy_types {
                versions.push(version.to_string());
            }
        }
    }
    versions
}

/// Parses `key = "value"`, returning `value`.
fn toml_string<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(key)?.trim_start().strip_prefix('=')?.trim();
    rest.strip_prefix('"')?.strip_suffix('"')
}

fn version_key(version: &str) -> Vec<u64> {
    version.split(['.', '-', '+']).map(|part| part.parse().unwrap_or(0)).collect()
}
