//! Where a peer is and who it is: the endpoint and certificate
//! fingerprint checks shared by the definitions file and enrolment.

/// Checks a peer endpoint: `https://HOST:PORT`.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let rest = endpoint.strip_prefix("https://").ok_or_else(|| {
        format!("endpoint `{endpoint}` must start with https:// (peers always talk TLS)")
    })?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| {
        format!("endpoint `{endpoint}` needs a port, e.g. https://hub.example:7481")
    })?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!(
            "endpoint `{endpoint}` must look like https://HOST:PORT"
        ));
    }
    Ok(())
}

/// Checks a certificate fingerprint: `sha256:` and 64 hex digits (colons
/// between byte pairs are accepted, as `openssl x509 -fingerprint` prints).
pub fn check_fingerprint(fingerprint: &str) -> Result<(), String> {
    normalize_fingerprint(fingerprint).map(|_| ())
}

/// The canonical form of a fingerprint: `sha256:` + 64 lowercase hex digits.
pub fn normalize_fingerprint(fingerprint: &str) -> Result<String, String> {
    let hex: String = fingerprint
        .trim()
        .strip_prefix("sha256:")
        .or_else(|| fingerprint.trim().strip_prefix("SHA256:"))
        .unwrap_or("")
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(format!("sha256:{hex}"))
    } else {
        Err(format!(
            "fingerprint `{fingerprint}` must be `sha256:` followed by 64 hex digits, as `procsync init` prints it on the peer"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_normalize() {
        let hex = "AB".repeat(32);
        let colons = hex
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(
            normalize_fingerprint(&format!("SHA256:{colons}")).unwrap(),
            format!("sha256:{}", "ab".repeat(32))
        );
        assert!(normalize_fingerprint("md5:abc").is_err());
    }
}
