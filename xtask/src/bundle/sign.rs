//! Who made a bundle: `SHA256SUMS` signed with an SSH key into `SHA256SUMS.sig`, OpenSSH's
//! SSHSIG format in the namespace `netpoint-bundle`, and checked against an allowed signers
//! file, as git's SSH signing does; `ssh-keygen -Y verify` checks the same file by hand.
//!
//! The signature covers `SHA256SUMS` only, and through its hashes every file it lists.

use std::{
    ffi::OsString,
    fs,
    io::Read,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use ssh_agent_client_rs::{Client, Identity};
use ssh_key::{
    private::{KeypairData, RsaKeypair},
    public::KeyData,
    Algorithm, EcdsaCurve, HashAlg, LineEnding, PrivateKey, PublicKey, SshSig,
};

use super::allowed_signers::AllowedSigners;
use crate::remedy::Remedy;

pub const NAMESPACE: &str = "netpoint-bundle";

/// The signature file beside `SHA256SUMS`.
pub const SIG: &str = "SHA256SUMS.sig";

/// A signature file larger than this is not one (an SSHSIG of the largest RSA key is ~3 KiB).
const MAX_SIG_BYTES: u64 = 64 * 1024;

/// A key that signs bundles: a private key file without a passphrase, or a public key file
/// whose private half is in ssh-agent.
pub struct SigningKey {
    path: PathBuf,
    public: PublicKey,
    signer: Signer,
}

enum Signer {
    File(Box<PrivateKey>),
    Agent(PathBuf),
}

impl SigningKey {
    /// Reads the key and checks, before any work, that it can sign: its type, its passphrase,
    /// and for a public key that the ssh-agent at `SSH_AUTH_SOCK` holds the private half.
    pub fn open(path: &Path) -> anyhow::Result<SigningKey> {
        SigningKey::open_with(path, std::env::var_os("SSH_AUTH_SOCK"))
    }

    fn open_with(path: &Path, agent: Option<OsString>) -> anyhow::Result<SigningKey> {
        let shown = path.display();
        let text = read_small(path, 1 << 20).with_context(|| {
            format!("cannot read the signing key {shown}: pass an SSH private key file, or a .pub file whose private key is in ssh-agent")
        })?;
        let text = text.trim();
        let (public, signer) = if text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") {
            // ssh-key 0.6 cannot read every ECDSA key file (a private scalar shorter than the
            // curve's size, as in about one P-521 key in six); the agent reads them all.
            let key = PrivateKey::from_openssh(text).map_err(|err| {
                anyhow::anyhow!("the signing key {shown} cannot be read here ({err}): add it to ssh-agent (`ssh-add {shown}`) and pass its public key ({shown}.pub) instead")
            })?;
            if key.is_encrypted() {
                bail!(
                    "the signing key {shown} is protected by a passphrase, which this tool never asks for: add it to ssh-agent (`ssh-add {shown}`) and pass its public key ({shown}.pub) instead"
                );
            }
            (key.public_key().clone(), Some(key))
        } else if text.starts_with("-----BEGIN ") {
            bail!(
                "the signing key {shown} is a PEM private key, which this tool does not read: add it to ssh-agent (`ssh-add {shown}`) and pass its public key file instead"
            );
        } else {
            let line = text
                .lines()
                .map(str::trim)
                .find(|line| !line.is_empty() && !line.starts_with('#'))
                .unwrap_or_default();
            let public = PublicKey::from_openssh(line).map_err(|_| {
                anyhow::anyhow!("the signing key {shown} is neither an OpenSSH private key nor a public key: pass a key written by ssh-keygen")
            })?;
            (public, None)
        };
        supported(path, public.algorithm())?;
        let signer = match signer {
            Some(private) => Signer::File(Box::new(private)),
            None => Signer::Agent(agent_socket(path, &public, agent)?),
        };
        let key = SigningKey {
            path: path.to_path_buf(),
            public,
            signer,
        };
        if let Signer::Agent(socket) = &key.signer {
            key.check_agent_holds(socket)?;
        }
        Ok(key)
    }

    /// `ED25519 SHA256:… (key file keys/ci)` or `(in ssh-agent)`.
    pub fn describe(&self) -> String {
        let whence = match &self.signer {
            Signer::File(_) => format!("key file {}", self.path.display()),
            Signer::Agent(_) => format!("in ssh-agent, {}", self.path.display()),
        };
        format!("{} ({whence})", key_name(self.public.key_data()))
    }

    /// The armored SSHSIG of `message` (the bytes of `SHA256SUMS`), checked before it is
    /// returned.
    pub fn sign(&self, message: &[u8]) -> anyhow::Result<String> {
        let signature = match &self.signer {
            Signer::File(key) => match key.key_data() {
                KeypairData::Rsa(rsa) => sign_rsa(rsa, message),
                _ => Ok(SshSig::sign(
                    key.as_ref(),
                    NAMESPACE,
                    HashAlg::Sha512,
                    message,
                )?),
            }
            .with_context(|| format!("signing with {}", self.path.display()))?,
            Signer::Agent(socket) => {
                let data = SshSig::signed_data(NAMESPACE, HashAlg::Sha512, message)?;
                let mut agent = connect(socket)?;
                let signature = agent.sign(&self.public, &data).map_err(|err| {
                    anyhow::anyhow!(
                        "ssh-agent did not sign with {} ({err}): check that the key is still added (`ssh-add -l`) and confirm the request if the agent asks",
                        key_name(self.public.key_data())
                    )
                })?;
                SshSig::new(
                    self.public.key_data().clone(),
                    NAMESPACE,
                    HashAlg::Sha512,
                    signature,
                )?
            }
        };
        self.public
            .verify(NAMESPACE, message, &signature)
            .context("the new signature does not verify: the key or the agent is broken")?;
        Ok(signature.to_pem(LineEnding::LF)?)
    }

    fn check_agent_holds(&self, socket: &Path) -> anyhow::Result<()> {
        let identities = connect(socket)?
            .list_all_identities()
            .map_err(|err| anyhow::anyhow!("ssh-agent at SSH_AUTH_SOCK did not list its keys ({err}): start it again and `ssh-add` the key"))?;
        let held = identities.iter().any(|identity| match identity {
            Identity::PublicKey(key) => key.key_data() == self.public.key_data(),
            Identity::Certificate(_) => false,
        });
        if !held {
            bail!(
                "ssh-agent does not hold the private key of {} ({}): add it with `ssh-add` and run again",
                self.path.display(),
                key_name(self.public.key_data())
            );
        }
        Ok(())
    }
}

/// An RSA key file's SSHSIG (rsa-sha2-512). ssh-key 0.6.7 builds the private key with its
/// first prime twice, which the rsa crate refuses (fixed upstream in RustCrypto/SSH#217, not
/// released in 0.6), so the key is built here from the same components.
fn sign_rsa(key: &RsaKeypair, message: &[u8]) -> anyhow::Result<SshSig> {
    use rsa::signature::{SignatureEncoding, Signer as _};
    let big = |mpint: &ssh_key::Mpint| {
        rsa::BigUint::from_bytes_be(mpint.as_positive_bytes().unwrap_or_default())
    };
    let private = rsa::RsaPrivateKey::from_components(
        big(&key.public.n),
        big(&key.public.e),
        big(&key.private.d),
        vec![big(&key.private.p), big(&key.private.q)],
    )?;
    let data = SshSig::signed_data(NAMESPACE, HashAlg::Sha512, message)?;
    let signature = rsa::pkcs1v15::SigningKey::<sha2::Sha512>::new(private).try_sign(&data)?;
    let signature = ssh_key::Signature::new(
        Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        },
        signature.to_vec(),
    )?;
    Ok(SshSig::new(
        KeyData::Rsa(key.public.clone()),
        NAMESPACE,
        HashAlg::Sha512,
        signature,
    )?)
}

fn agent_socket(
    path: &Path,
    public: &PublicKey,
    agent: Option<OsString>,
) -> anyhow::Result<PathBuf> {
    match agent.filter(|value| !value.is_empty()) {
        Some(socket) => Ok(PathBuf::from(socket)),
        None => bail!(
            "{} is a public key ({}), so its private half must be in ssh-agent, but SSH_AUTH_SOCK is not set: start ssh-agent and `ssh-add` the private key, or pass the private key file",
            path.display(),
            key_name(public.key_data())
        ),
    }
}

fn connect(socket: &Path) -> anyhow::Result<Client> {
    Client::connect(socket).map_err(|err| {
        anyhow::anyhow!(
            "cannot reach ssh-agent at SSH_AUTH_SOCK={} ({err}): start ssh-agent and `ssh-add` the key",
            socket.display()
        )
    })
}

/// Key types that sign bundles: those OpenSSH signs files with, but DSA (retired by OpenSSH)
/// and security keys (which need their hardware at export).
fn supported(path: &Path, algorithm: Algorithm) -> anyhow::Result<()> {
    match algorithm {
        Algorithm::Ed25519
        | Algorithm::Rsa { .. }
        | Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256 | EcdsaCurve::NistP384 | EcdsaCurve::NistP521,
        } => Ok(()),
        other => bail!(
            "the signing key {} is a {} key, which cannot sign bundles: use an ed25519, RSA or ECDSA key (`ssh-keygen -t ed25519`)",
            path.display(),
            other.as_str()
        ),
    }
}

/// `ED25519 SHA256:…`, as `ssh-keygen -l` names a key.
pub fn key_name(key: &KeyData) -> String {
    let kind = match key.algorithm() {
        Algorithm::Ed25519 => "ED25519".to_string(),
        Algorithm::Rsa { .. } => "RSA".to_string(),
        Algorithm::Ecdsa { .. } => "ECDSA".to_string(),
        Algorithm::SkEd25519 => "ED25519-SK".to_string(),
        Algorithm::SkEcdsaSha2NistP256 => "ECDSA-SK".to_string(),
        other => other.as_str().to_string(),
    };
    format!("{kind} key {}", key.fingerprint(HashAlg::Sha256))
}

/// Who signed a bundle, once the signature verified and the allowed signers allow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The principals of the lines that allow the key, as the file writes them.
    pub principals: Vec<String>,
    /// `ED25519 key SHA256:…`
    pub key: String,
}

impl Signed {
    pub fn summary(&self) -> String {
        format!("signed by {} ({})", self.principals.join(", "), self.key)
    }
}

/// The bundle's signature, `None` when it has none; anything there that is not an SSHSIG
/// armored signature refuses the bundle.
pub fn read_signature(dir: &Path) -> anyhow::Result<Option<SshSig>> {
    read_signature_file(&dir.join(SIG)).map_err(|why| {
        anyhow::anyhow!(
            "bundle {}: {SIG} is not an SSH signature ({why}), nothing was changed: {}",
            dir.display(),
            Remedy::ResignBundle
        )
    })
}

pub(crate) fn read_signature_file(path: &Path) -> Result<Option<SshSig>, String> {
    match fs::symlink_metadata(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.to_string()),
        Ok(meta) if !meta.is_file() => Err("not a regular file".into()),
        Ok(_) => {
            let text = read_small(path, MAX_SIG_BYTES).map_err(|err| err.to_string())?;
            let signature = SshSig::from_pem(text.trim()).map_err(|err| err.to_string())?;
            Ok(Some(signature))
        }
    }
}

/// Checks `signature` over `sums` (the bytes of `SHA256SUMS`, read once) and its key
/// against `allowed` at `now`; every refusal is one line that says which and what to do.
pub fn verify(
    dir: &Path,
    sums: &[u8],
    signature: &SshSig,
    allowed: &AllowedSigners,
    now: i64,
) -> anyhow::Result<Signed> {
    let shown = dir.display();
    let key = signature.public_key();
    let name = key_name(key);
    if signature.namespace() != NAMESPACE {
        bail!(
            "bundle {shown}: {SIG} is a signature for the namespace {:?}, not {NAMESPACE:?}, nothing was changed: {}",
            signature.namespace(),
            Remedy::SignBundles
        );
    }
    // DSA is left out of ssh-key's features, as OpenSSH has retired it.
    if matches!(key.algorithm(), Algorithm::Dsa | Algorithm::Other(_)) {
        bail!(
            "bundle {shown} is signed with a {} key, which this tool cannot verify, nothing was changed: sign with an ed25519, RSA or ECDSA key",
            key.algorithm().as_str()
        );
    }
    if PublicKey::from(key.clone())
        .verify(NAMESPACE, sums, signature)
        .is_err()
    {
        bail!(
            "bundle {shown} was changed after it was signed: {SIG} ({name}) does not verify over SHA256SUMS, nothing was changed: export the bundle again"
        );
    }
    let allowing = allowed.allowing(key, NAMESPACE, now);
    if !allowing.is_empty() {
        return Ok(Signed {
            principals: allowing.iter().map(|e| e.principals.clone()).collect(),
            key: name,
        });
    }
    let file = allowed.path.display();
    let listed: Vec<String> = allowed
        .listing(key)
        .filter_map(|entry| {
            entry
                .denies(NAMESPACE, now)
                .map(|why| format!("line {} ({}): {why}", entry.line, entry.principals))
        })
        .collect();
    if listed.is_empty() {
        bail!(
            "bundle {shown} is signed by {name}, which {file} does not list, nothing was changed: if you trust that key, add a line `PRINCIPAL namespaces=\"{NAMESPACE}\" {}` to {file} ({})",
            PublicKey::from(key.clone()).to_openssh().unwrap_or_default(),
            Remedy::OtherSigners
        );
    }
    bail!(
        "bundle {shown} is signed by {name}, which {file} does not allow to sign bundles now ({}), nothing was changed: fix that line, or export the bundle again with an allowed key",
        listed.join("; ")
    )
}

/// A file read whole, refused past `limit` bytes.
fn read_small(path: &Path, limit: u64) -> anyhow::Result<String> {
    let mut text = String::new();
    let read = fs::File::open(path)?
        .take(limit + 1)
        .read_to_string(&mut text)?;
    if read as u64 > limit {
        bail!("larger than {limit} bytes");
    }
    Ok(text)
}

#[cfg(test)]
mod tests;
