//! `tandem cert`: a small CA for the TLS transport. Each node gets a
//! certificate whose subject alternative name is its node name, usable
//! both to serve and to connect; keys are written with mode 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

fn write_secret(path: &Path, text: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn write_public(path: &Path, text: &str) -> Result<()> {
    if path.exists() {
        bail!("{} exists already; remove it first", path.display());
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// `tandem cert ca --dir DIR`.
pub fn ca(dir: &Path) -> Result<ExitCode> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut p = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    p.distinguished_name
        .push(DnType::CommonName, "tandem cluster CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_after = rcgen::date_time_ymd(2046, 1, 1);
    let cert = p.self_signed(&key).context("signing the CA certificate")?;
    write_secret(&dir.join("ca.key"), &key.serialize_pem())?;
    write_public(&dir.join("ca.crt"), &cert.pem())?;
    crate::outln!(
        "wrote {0}/ca.crt and {0}/ca.key (keep ca.key offline after making the node certificates)",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `tandem cert node NAME --dir DIR`.
pub fn node(name: &str, dir: &Path) -> Result<ExitCode> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        bail!("node name {name:?} must be letters, digits, '-' and '.' (it becomes the certificate's DNS name)");
    }
    let ca_pem = fs::read_to_string(dir.join("ca.crt")).with_context(|| {
        format!(
            "cannot read {}/ca.crt (run `tandem cert ca` first)",
            dir.display()
        )
    })?;
    let ca_key = KeyPair::from_pem(
        &fs::read_to_string(dir.join("ca.key"))
            .with_context(|| format!("cannot read {}/ca.key", dir.display()))?,
    )
    .context("ca.key is not a PEM key")?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca_pem, ca_key).context("ca.crt is not a CA certificate")?;
    let key = KeyPair::generate().context("generating the node key")?;
    let mut p =
        CertificateParams::new(vec![name.to_owned()]).context("node certificate parameters")?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let cert = p
        .signed_by(&key, &issuer)
        .context("signing the node certificate")?;
    write_secret(&dir.join(format!("{name}.key")), &key.serialize_pem())?;
    write_public(&dir.join(format!("{name}.crt")), &cert.pem())?;
    crate::outln!("wrote {0}/{name}.crt and {0}/{name}.key; on node {name} set [tls] cert, key and ca = {0}/ca.crt", dir.display());
    Ok(ExitCode::SUCCESS)
}
