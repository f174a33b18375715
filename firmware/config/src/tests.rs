use super::*;

fn base() -> String {
    r#"
[appliance]
hostname = "mx1.example.net"
primary_domain = "example.net"
data_dir = "/data/mxrack"

[smtp]
mx = ["0.0.0.0:25"]
submission = ["0.0.0.0:587"]
submissions = ["0.0.0.0:465"]
"#
    .to_string()
}

fn error_of(text: &str) -> String {
    Config::from_toml(text)
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn a_minimal_appliance_config_is_accepted_with_defaults() {
    let c = Config::from_toml(&base()).expect("valid");
    assert_eq!(c.smtp.max_recipients, 100);
    assert_eq!(c.smtp.mx.len(), 1);
    assert!(!c.appliance.demo);
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let e = error_of(&(base() + "max_recipents = 5\n"));
    assert!(e.contains("max_recipents"), "{e}");
}

#[test]
fn errors_name_the_key() {
    let table = [
        ("max_recipients = 5\n", "smtp.max_recipients"),
        (
            "max_command_line_bytes = 100\n",
            "smtp.max_command_line_bytes",
        ),
        ("max_data_line_bytes = 999\n", "smtp.max_data_line_bytes"),
        ("max_connections = 0\n", "smtp.max_connections"),
        (
            "max_connections_per_client = 0\n",
            "smtp.max_connections_per_client",
        ),
        ("idle_timeout_secs = 1\n", "smtp.idle_timeout_secs"),
        ("command_timeout_secs = 9\n", "smtp.command_timeout_secs"),
        ("envelope_timeout_secs = 9\n", "smtp.envelope_timeout_secs"),
        ("login_timeout_secs = 3601\n", "smtp.login_timeout_secs"),
        ("max_message_bytes = 10\n", "smtp.max_message_bytes"),
    ];
    for (line, key) in table {
        let e = error_of(&(base() + line));
        assert!(e.starts_with(key), "{line:?} gave {e}");
    }
}

#[test]
fn the_same_address_on_two_listeners_is_refused() {
    let text = base().replace("[\"0.0.0.0:587\"]", "[\"0.0.0.0:25\"]");
    assert!(error_of(&text).starts_with("smtp.submission"));
}

#[test]
fn cert_without_key_is_refused() {
    let text = base() + "[tls]\ncert = \"/etc/c.pem\"\n";
    assert!(error_of(&text).starts_with("tls.key"));
}

#[test]
fn bad_names_are_refused() {
    assert!(error_of(&base().replace("mx1.example.net", "mx 1")).starts_with("appliance.hostname"));
    assert!(
        error_of(&base().replace("\"example.net\"", "\"net\""))
            .starts_with("appliance.primary_domain")
    );
}

#[test]
fn the_embedded_default_is_valid_and_loopback_only() {
    let c = Config::embedded_default("data".into());
    c.validate().expect("valid");
    for addr in c
        .smtp
        .mx
        .iter()
        .chain(&c.smtp.submission)
        .chain(&c.smtp.submissions)
    {
        assert!(addr.ip().is_loopback());
        assert!(addr.port() > 1024);
    }
    // What `config show` prints reads back to the same configuration.
    assert_eq!(Config::from_toml(&c.to_toml()).expect("round trip"), c);
}

#[test]
fn dns_negative_ttl_has_a_default_and_a_ceiling() {
    let cfg = Config::from_toml(&base()).expect("base");
    assert_eq!(cfg.dns.negative_ttl_secs, crate::DNS_NEGATIVE_TTL_SECS);
    let ok =
        Config::from_toml(&(base() + "[dns]\nnegative_ttl_secs = 0\n")).expect("0 turns it off");
    assert_eq!(ok.dns.negative_ttl_secs, 0);
    let e = error_of(&(base() + "[dns]\nnegative_ttl_secs = 3601\n"));
    assert!(e.starts_with("dns.negative_ttl_secs"), "{e}");
}
