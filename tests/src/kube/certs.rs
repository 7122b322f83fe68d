//! Certificates, keys, the token file and the admin kubeconfig of a control plane (openssl CLI).
//!
//! EC P-256 keys throughout: generating them takes milliseconds (RSA 2048 takes ~100 ms each).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// A fresh bearer token for the `admin` user (group `system:masters`): 128 random bits, so a
/// local cluster (`scripts/cluster.sh up`) is not open to whoever knows a token in the repo.
fn admin_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes).context("read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Files written by [`write_all`] into `<dir>/pki` (and the kubeconfig into `<dir>`).
#[derive(Clone, Debug)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
    pub token_file: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Pki {
    pub fn at(dir: &Path) -> Self {
        let pki = dir.join("pki");
        Self {
            ca_cert: pki.join("ca.crt"),
            serving_cert: pki.join("apiserver.crt"),
            serving_key: pki.join("apiserver.key"),
            sa_key: pki.join("sa.key"),
            sa_pub: pki.join("sa.pub"),
            token_file: pki.join("tokens.csv"),
            kubeconfig: dir.join("kubeconfig"),
        }
    }

    /// True when every file exists (a restarted local cluster reuses them).
    pub fn exists(&self) -> bool {
        [&self.ca_cert, &self.serving_cert, &self.serving_key, &self.sa_key, &self.sa_pub, &self.token_file]
            .iter()
            .all(|p| p.is_file())
            && self.kubeconfig.is_file()
    }
}

/// Generate the CA, the API server's serving certificate (SAN: `ip`, localhost and the
/// `kubernetes.default.svc` names), the service-account signing key, the token file and the admin
/// kubeconfig for `server_url`.
pub fn write_all(dir: &Path, ip: IpAddr, server_url: &str) -> Result<Pki> {
    let paths = Pki::at(dir);
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki).with_context(|| format!("create {}", pki.display()))?;
    let ca_key = pki.join("ca.key");
    ec_certificate("/CN=amime-test-ca", &[], &ca_key, &paths.ca_cert)?;
    let san = format!(
        "subjectAltName=IP:{ip},IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,\
         DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    );
    let serving_extensions = [
        "-CA",
        s(&paths.ca_cert),
        "-CAkey",
        s(&ca_key),
        "-addext",
        &san,
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-addext",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "-addext",
        "extendedKeyUsage=serverAuth",
    ];
    ec_certificate("/CN=kube-apiserver", &serving_extensions, &paths.serving_key, &paths.serving_cert)?;
    openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", s(&paths.sa_key)])?;
    openssl(&["ec", "-in", s(&paths.sa_key), "-pubout", "-out", s(&paths.sa_pub)])?;
    let token = admin_token()?;
    write(&paths.token_file, &format!("{token},admin,admin-uid,system:masters\n"))?;
    write(&paths.kubeconfig, &kubeconfig(server_url, &paths.ca_cert, &token))?;
    Ok(paths)
}

/// A kubeconfig with one cluster, one token user and one (current) context, all named `amime`.
pub fn kubeconfig(server_url: &str, ca_cert: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: amime\n  cluster:\n    server: {server_url}\n    \
         certificate-authority: {}\nusers:\n- name: amime\n  user:\n    token: {token}\ncontexts:\n- name: amime\n  \
         context:\n    cluster: amime\n    user: amime\ncurrent-context: amime\n",
        ca_cert.display()
    )
}

/// Writes a file only its owner can read (tokens and the admin kubeconfig are credentials).
fn write(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    file.write_all(contents.as_bytes()).with_context(|| format!("write {}", path.display()))
}

/// A new P-256 key at `key` and a certificate for `subject` at `cert`, valid ten years:
/// self-signed, or signed by the CA that `extra` names (`-CA`, `-CAkey`, `-addext` ...).
fn ec_certificate(subject: &str, extra: &[&str], key: &Path, cert: &Path) -> Result<()> {
    let mut args = vec!["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    args.extend(["-days", "3650", "-subj", subject]);
    args.extend_from_slice(extra);
    args.extend(["-keyout", s(key), "-out", s(cert)]);
    openssl(&args)
}

fn s(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

fn openssl(args: &[&str]) -> Result<()> {
    let output = Command::new("openssl").args(args).output().context("run openssl (is it installed?)")?;
    if !output.status.success() {
        bail!("openssl {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}
