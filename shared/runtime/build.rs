//! Writes Mozilla's root certificates (`webpki-root-certs`) as one PEM bundle
//! into `OUT_DIR` for `tls::MOZILLA_ROOTS_PEM`: the AWS SDK's trust store takes
//! PEM, and encoding it here spares every cold start the work.

use std::fmt::Write as _;

use base64::Engine as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo::rerun-if-changed=build.rs");
    let mut pem = String::new();
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            writeln!(pem, "{}", std::str::from_utf8(line)?)?;
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("mozilla-roots.pem"), pem)?;
    Ok(())
}
