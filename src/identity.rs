//! The instance's TLS identity: a key pair and self-signed certificate made
//! at `init`, and the `sha256:` fingerprint peers pin. No CA is involved.

use crate::ids::hex;

/// A freshly made identity.
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
    pub fingerprint: String,
}

/// Makes a key pair and a self-signed certificate naming the instance (and
/// `localhost`, so the admin API can be served over TLS on loopback).
pub fn generate(instance_name: &str) -> Result<Identity, String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let dns_name: String = instance_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if !dns_name.is_empty() && dns_name != "localhost" {
        names.push(dns_name);
    }
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot make the instance certificate: {e}"))?;
    Ok(Identity {
        fingerprint: fingerprint_of_der(certified.cert.der()),
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
    })
}

/// `sha256:` + lowercase hex of the SHA-256 of a certificate's DER, the same
/// digest `openssl x509 -fingerprint -sha256` prints.
pub fn fingerprint_of_der(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    format!("sha256:{}", hex(digest.as_ref()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn identities_are_unique_and_fingerprinted() {
        let a = super::generate("edge-1").unwrap();
        let b = super::generate("edge-1").unwrap();
        assert!(a.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(a.key_pem.contains("PRIVATE KEY"));
        assert_eq!(a.fingerprint.len(), "sha256:".len() + 64);
        assert_ne!(a.fingerprint, b.fingerprint);
        crate::config::sync::check_fingerprint(&a.fingerprint).unwrap();
    }
}
