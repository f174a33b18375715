//! DNSSEC-validated lookups for DANE (RFC 7672): hickory's validator
//! (`DnssecDnsHandle`, RFC 4035 5) over the `[dns]` servers, with its cache
//! and CNAME chasing (`CachingClient`), and one check of our own in front
//! of it.
//!
//! The check: hickory 0.26.0-alpha.1 does not verify that an RRSIG's
//! signer is the zone the records belong to (RFC 4035 5.3.1, a TODO in its
//! `RrsigValidity::check`), so anyone holding a signed zone could sign
//! forged records for any other name with their own key and have them
//! marked secure. [`SignerCheck`] drops every RRSIG whose signer name is
//! not the owner name or one of its ancestors before the validator sees
//! the answer: such records are then unsigned (insecure in an unsigned
//! zone, bogus in a signed one), never secure.
//!
//! Answers carry each record's proof (`Record::proof`); [`Validator`] does
//! not judge them: route.rs and dane.rs do.

use futures_core::Stream;
use hickory_resolver::caching_client::CachingClient;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::name_server::{NameServerPool, TokioConnectionProvider};
use hickory_resolver::proto::dnssec::rdata::RRSIG;
use hickory_resolver::proto::dnssec::{DnssecDnsHandle, Proof, TrustAnchors};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::op::{Message, Query};
use hickory_resolver::proto::rr::{Name, Record, RecordType};
use hickory_resolver::proto::xfer::{
    DnsHandle, DnsRequest, DnsRequestOptions, DnsResponse, FirstAnswer, RetryDnsHandle,
};
use hickory_resolver::proto::{ProtoError, ProtoErrorKind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Answers the validating lookups keep (MX, A, AAAA, TLSA and the DNSKEY
/// and DS records of the chains above them).
pub const CACHE_ENTRIES: usize = 1024;

type Pool = NameServerPool<TokioConnectionProvider>;
type Validating = DnssecDnsHandle<SignerCheck<RetryDnsHandle<Pool>>>;

/// Lookups through hickory's DNSSEC validator; see the module text.
pub struct Validator {
    cached: CachingClient<Validating>,
    uncached: Validating,
    /// The servers without validation, for the probe's first question.
    plain: SignerCheck<RetryDnsHandle<Pool>>,
    options: DnsRequestOptions,
}

impl Validator {
    /// Asks the servers `config` names with `opts`' timeout and attempts,
    /// trusting `anchors` (None: the root zone's keys built into hickory).
    pub fn new(
        config: &ResolverConfig,
        opts: &ResolverOpts,
        anchors: Option<TrustAnchors>,
    ) -> Validator {
        let servers = NameServerConfigGroup::from(config.name_servers().to_vec());
        let pool = NameServerPool::from_config(
            servers,
            Arc::new(opts.clone()),
            TokioConnectionProvider::default(),
        );
        let checked = SignerCheck(RetryDnsHandle::new(pool, opts.attempts.max(1)));
        let anchors = Arc::new(anchors.unwrap_or_default());
        let validating = DnssecDnsHandle::with_trust_anchor(checked.clone(), anchors);
        let mut options = DnsRequestOptions::default();
        options.use_edns = true;
        options.recursion_desired = true;
        Validator {
            cached: CachingClient::new(CACHE_ENTRIES, validating.clone(), true),
            uncached: validating,
            plain: checked,
            options,
        }
    }

    /// `name`'s records of type `rtype` (and the CNAMEs leading to them),
    /// each with its proof. No records: the error hickory gives (NXDOMAIN
    /// or no data, or `Nsec` for a denial that does not validate).
    pub async fn lookup(&self, name: &str, rtype: RecordType) -> Result<Lookup, ProtoError> {
        let name = Name::from_ascii(name)?;
        let lookup = self
            .cached
            .lookup(Query::query(name, rtype), self.options)
            .await;
        // A forged answer must not stay for the TTL its forger chose: one
        // packet would keep the domain waiting for a day.
        if let Ok(l) = &lookup
            && l.records().iter().any(|r| r.proof() == Proof::Bogus)
        {
            self.cached.clear_cache();
        }
        lookup
    }

    /// Whether the servers pass DNSSEC on: asked afresh (not from the
    /// cache) for the root zone's SOA with the DO bit, they answer it with
    /// its signature, and it validates. `Ok(false)`: they answered without
    /// one (or with no SOA, or it did not validate). `Err`: no answer at
    /// all (timeout, no connection, SERVFAIL): no evidence either way.
    pub async fn root_validates(&self) -> Result<bool, ProtoError> {
        let root_soa = Query::query(Name::root(), RecordType::SOA);
        let mut raw = self.options;
        raw.edns_set_dnssec_ok = true;
        let signed = match self
            .plain
            .lookup(root_soa.clone(), raw)
            .first_answer()
            .await
        {
            Ok(r) => r.answers().iter().any(|r| {
                r.record_type() == RecordType::RRSIG
                    && r.try_borrow::<RRSIG>()
                        .is_some_and(|s| s.data().input().type_covered == RecordType::SOA)
            }),
            Err(e) => match e.kind() {
                ProtoErrorKind::NoRecordsFound(no)
                    if no.response_code != ResponseCode::ServFail =>
                {
                    false
                }
                _ => return Err(e),
            },
        };
        if !signed {
            return Ok(false);
        }
        let response = self
            .uncached
            .lookup(root_soa, self.options)
            .first_answer()
            .await?;
        Ok(response
            .answers()
            .iter()
            .any(|r| r.record_type() == RecordType::SOA && r.proof().is_secure()))
    }
}

/// Drops RRSIGs signed by a zone that cannot hold the records they cover
/// (the signer is neither the owner name nor an ancestor of it), in every
/// section of every answer, before the validator sees them.
#[derive(Clone)]
pub struct SignerCheck<H>(pub H);

impl<H: DnsHandle> DnsHandle for SignerCheck<H> {
    type Response = Checked<H::Response>;

    fn is_verifying_dnssec(&self) -> bool {
        self.0.is_verifying_dnssec()
    }

    fn is_using_edns(&self) -> bool {
        self.0.is_using_edns()
    }

    fn send(&self, request: DnsRequest) -> Self::Response {
        Checked(self.0.send(request))
    }
}

/// The response stream of [`SignerCheck`].
pub struct Checked<S>(S);

impl<S> Stream for Checked<S>
where
    S: Stream<Item = Result<DnsResponse, ProtoError>> + Unpin,
{
    type Item = Result<DnsResponse, ProtoError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0)
            .poll_next(cx)
            .map(|item| item.map(|r| r.and_then(drop_foreign_signatures)))
    }
}

/// Whether `record` may stay: anything but an RRSIG, or an RRSIG whose
/// signer is the owner name or an ancestor (RFC 4035 5.3.1 asks for the
/// zone itself; an ancestor could sign the delegation anyway).
pub fn signer_may_sign(record: &Record) -> bool {
    match record.try_borrow::<RRSIG>() {
        Some(sig) => sig.data().input().signer_name.zone_of(record.name()),
        None => true,
    }
}

fn drop_foreign_signatures(response: DnsResponse) -> Result<DnsResponse, ProtoError> {
    let all = |m: &Message| {
        m.answers()
            .iter()
            .chain(m.name_servers())
            .chain(m.additionals())
            .all(signer_may_sign)
    };
    if all(&response) {
        return Ok(response);
    }
    let mut message = response.into_message();
    let answers = message.take_answers();
    let authority = message.take_name_servers();
    let additional = message.take_additionals();
    message.insert_answers(answers.into_iter().filter(signer_may_sign).collect());
    message.insert_name_servers(authority.into_iter().filter(signer_may_sign).collect());
    message.insert_additionals(additional.into_iter().filter(signer_may_sign).collect());
    DnsResponse::from_message(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::RData;
    use hickory_resolver::proto::rr::rdata::A;
    use hickory_resolver::proto::serialize::binary::{BinDecoder, Restrict};

    /// An RRSIG over `owner`'s A records by `signer`, from its wire form
    /// (RFC 4034 3.1); the signature itself does not matter here.
    fn rrsig(owner: &str, signer: &str) -> Record {
        let mut wire = vec![0, 1, 13, 3];
        wire.extend(60u32.to_be_bytes());
        wire.extend(2_000_000_000u32.to_be_bytes());
        wire.extend(1_000_000_000u32.to_be_bytes());
        wire.extend(1234u16.to_be_bytes());
        for label in signer
            .trim_end_matches('.')
            .split('.')
            .filter(|l| !l.is_empty())
        {
            wire.push(label.len() as u8);
            wire.extend(label.as_bytes());
        }
        wire.push(0);
        wire.extend([7u8; 64]);
        let len = wire.len() as u16;
        let rdata = RData::read(
            &mut BinDecoder::new(&wire),
            RecordType::RRSIG,
            Restrict::new(len),
        )
        .unwrap();
        Record::from_rdata(Name::from_ascii(owner).unwrap(), 60, rdata)
    }

    #[test]
    fn only_the_owner_zone_or_an_ancestor_may_sign() {
        assert!(signer_may_sign(&rrsig(
            "mx.victim.example.",
            "victim.example."
        )));
        assert!(signer_may_sign(&rrsig(
            "mx.victim.example.",
            "MX.Victim.Example."
        )));
        assert!(signer_may_sign(&rrsig("mx.victim.example.", "example.")));
        assert!(signer_may_sign(&rrsig("mx.victim.example.", ".")));
        // Another zone's key signing the victim's records (the forgery
        // hickory alone would accept).
        assert!(!signer_may_sign(&rrsig(
            "mx.victim.example.",
            "evil.example."
        )));
        assert!(!signer_may_sign(&rrsig(
            "victim.example.",
            "mx.victim.example."
        )));
        let a = Record::from_rdata(
            Name::from_ascii("mx.victim.example.").unwrap(),
            60,
            RData::A(A::new(192, 0, 2, 1)),
        );
        assert!(signer_may_sign(&a));
    }

    #[test]
    fn foreign_signatures_are_dropped_from_every_section() {
        let mut m = Message::query();
        m.add_answer(rrsig("mx.victim.example.", "evil.example."));
        m.add_answer(rrsig("mx.victim.example.", "victim.example."));
        m.add_name_server(rrsig("victim.example.", "evil.example."));
        m.add_additional(rrsig("x.victim.example.", "evil.example."));
        let r = drop_foreign_signatures(DnsResponse::from_message(m).unwrap()).unwrap();
        assert_eq!(r.answers().len(), 1);
        assert!(r.name_servers().is_empty() && r.additionals().is_empty());
    }
}
