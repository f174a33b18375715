//! DNSSEC-validated lookups for DANE (RFC 7672): hickory's validator
//! (`DnssecDnsHandle`, RFC 4035 5) over the `[dns]` servers, with its cache
//! and CNAME chasing (`CachingClient`), and one check of our own in front
//! of it.
//!
//! The screen ([`SignerCheck`]), for gaps of hickory 0.26.0-alpha.1's
//! validator that let forged answers pass:
//! * It does not verify that an RRSIG's signer is the zone the records
//!   belong to (RFC 4035 5.3.1, a TODO in its `RrsigValidity::check`), so
//!   anyone holding a signed zone could sign records for any other name.
//!   Every RRSIG whose signer is not the owner name or one of its
//!   ancestors is dropped: such records are then unsigned.
//! * It does not tie a denial of existence to the queried name's zone (an
//!   NSEC of any signed zone "covered" any name). In a negative answer,
//!   an SOA is kept only when its owner encloses the queried name, and
//!   NSEC/NSEC3 records only under that SOA's owner.
//! * It takes any proved "no DS" as an insecure delegation (RFC 4035 5.2
//!   wants an NSEC with the NS bit, without SOA and DS), so stripping the
//!   signatures of records below a zone apex made them merely insecure. A
//!   DS denial whose NSEC at the name says it is no delegation is turned
//!   into an error: the validator then looks at the parent zones, finds
//!   their DS records, and calls the stripped records bogus. (NSEC3 zones
//!   are not screened so: see ARCHITECTURE.md, known gaps; route.rs fails
//!   closed on TLSA answers that are not proved once a host's addresses
//!   are.)
//!
//! Answers carry each record's proof (`Record::proof`); [`Validator`] does
//! not judge them: route.rs and dane.rs do.

use futures_core::Stream;
use hickory_resolver::caching_client::CachingClient;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::name_server::{NameServerPool, TokioConnectionProvider};
use hickory_resolver::proto::dnssec::rdata::{DNSSECRData, NSEC, RRSIG};
use hickory_resolver::proto::dnssec::{DnssecDnsHandle, Proof, TrustAnchors};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::op::{Message, Query};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::proto::xfer::{
    DnsHandle, DnsRequest, DnsRequestOptions, DnsResponse, FirstAnswer, RetryDnsHandle,
};
use hickory_resolver::proto::{ProtoError, ProtoErrorKind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Answers the validating lookups keep (MX, A, AAAA, TLSA). The DNSKEY and
/// DS questions hickory's validator asks itself are not cached: each
/// lookup walks the chain again.
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
    /// one (or with no SOA). `Err`: no answer at all (timeout, no
    /// connection, SERVFAIL), or a signature that does not validate: no
    /// evidence either way.
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
        // Signed but not validating (a DNSKEY lookup that timed out, or a
        // forgery): no evidence that the servers strip DNSSEC.
        if response
            .answers()
            .iter()
            .any(|r| r.record_type() == RecordType::SOA && r.proof().is_secure())
        {
            Ok(true)
        } else {
            Err(ProtoError::from(
                "the root SOA is signed but does not validate",
            ))
        }
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
        let query = request.queries().first().cloned();
        Checked(self.0.send(request), query)
    }
}

/// The response stream of [`SignerCheck`], with the question asked.
pub struct Checked<S>(S, Option<Query>);

impl<S> Stream for Checked<S>
where
    S: Stream<Item = Result<DnsResponse, ProtoError>> + Unpin,
{
    type Item = Result<DnsResponse, ProtoError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let query = self.1.clone();
        Pin::new(&mut self.0)
            .poll_next(cx)
            .map(|item| item.map(|r| screen(r, query.as_ref())))
    }
}

/// [`SignerCheck`]'s screen of one answer (see the module text).
fn screen(
    answer: Result<DnsResponse, ProtoError>,
    query: Option<&Query>,
) -> Result<DnsResponse, ProtoError> {
    let response = match answer {
        Ok(r) => r,
        // Negative answers come as this error, their authority records
        // inside: screened alike (the validator rebuilds a message of them).
        Err(e) => {
            let (ProtoErrorKind::NoRecordsFound(no), Some(q)) = (e.kind(), query) else {
                return Err(e);
            };
            let mut no = no.clone();
            let authority: Vec<Record> = no.authorities.as_deref().unwrap_or_default().to_vec();
            let authority = screen_denial(q, authority)?;
            if no
                .soa
                .as_ref()
                .is_some_and(|soa| !soa.name().zone_of(q.name()))
            {
                no.soa = None;
            }
            no.authorities = Some(authority.into());
            return Err(ProtoErrorKind::NoRecordsFound(no).into());
        }
    };
    let negative = query.is_some_and(|q| {
        !response
            .answers()
            .iter()
            .any(|r| r.record_type() == q.query_type() || r.record_type() == RecordType::CNAME)
    });
    let clean = |m: &Message| {
        m.answers()
            .iter()
            .chain(m.name_servers())
            .chain(m.additionals())
            .all(signer_may_sign)
    };
    if !negative && clean(&response) {
        return Ok(response);
    }
    let mut message = response.into_message();
    let mut answers = message.take_answers();
    let mut authority: Vec<Record> = message.take_name_servers();
    let additional = message.take_additionals();
    if let (true, Some(q)) = (negative, query) {
        // Nothing but a denial answers a question with no records of its
        // type: any other record in the answer section would make hickory
        // skip the denial's check (and take a DS question's answer as
        // "insecure delegation").
        answers.clear();
        authority = screen_denial(q, authority)?;
    }
    message.insert_answers(answers.into_iter().filter(signer_may_sign).collect());
    message.insert_name_servers(authority.into_iter().filter(signer_may_sign).collect());
    message.insert_additionals(additional.into_iter().filter(signer_may_sign).collect());
    DnsResponse::from_message(message)
}

/// The authority records of a negative answer to `q` that may speak for
/// it: an SOA whose owner encloses the name, NSEC/NSEC3 records (and
/// signatures) under that owner, nothing signed by another zone. `Err`:
/// a DS denial at a name its own NSEC says is no delegation (RFC 4035
/// 5.2: NS set, SOA and DS clear), which hickory would take as an
/// insecure delegation.
pub fn screen_denial(q: &Query, authority: Vec<Record>) -> Result<Vec<Record>, ProtoError> {
    let zone: Option<Name> = authority
        .iter()
        .filter(|r| r.record_type() == RecordType::SOA && r.name().zone_of(q.name()))
        .map(|r| r.name().clone())
        .max_by_key(|n| n.num_labels());
    // A delegation's NSEC (NS without SOA) at a proper ancestor is the
    // parent's side of a cut above the name: it cannot deny anything below
    // (RFC 6840 4.1). (NSEC3 owners are hashes, and a covering NSEC3 of an
    // NXDOMAIN proof may well be some delegation's: not screened so.)
    let ancestor_cut = |r: &Record| match r.data() {
        RData::DNSSEC(DNSSECRData::NSEC(n)) => {
            let types: Vec<RecordType> = n.type_bit_maps().collect();
            types.contains(&RecordType::NS)
                && !types.contains(&RecordType::SOA)
                && r.name() != q.name()
                && r.name().zone_of(q.name())
        }
        _ => false,
    };
    // Only what a denial is made of: the zone's SOA and NSEC/NSEC3 under
    // it (other records, e.g. DS or DNSKEY of an unsigned zone, would
    // satisfy hickory's "all insecure" shortcut).
    let may_speak = |r: &Record| match r.record_type() {
        RecordType::SOA => r.name().zone_of(q.name()),
        RecordType::NSEC | RecordType::NSEC3 => {
            zone.as_ref().is_some_and(|z| z.zone_of(r.name())) && !ancestor_cut(r)
        }
        _ => false,
    };
    let (sigs, records): (Vec<Record>, Vec<Record>) = authority
        .into_iter()
        .filter(signer_may_sign)
        .partition(|r| r.record_type() == RecordType::RRSIG);
    let mut kept: Vec<Record> = records.into_iter().filter(|r| may_speak(r)).collect();
    // Signatures only over records kept.
    let sigs: Vec<Record> = sigs
        .into_iter()
        .filter(|sig| {
            sig.try_borrow::<RRSIG>().is_some_and(|s| {
                let covered = s.data().input().type_covered;
                kept.iter()
                    .any(|r| r.name() == sig.name() && r.record_type() == covered)
            })
        })
        .collect();
    kept.extend(sigs);
    // In an NSEC zone only an NSEC at the name itself, NS set, proves an
    // insecure delegation: a covering one (an empty non-terminal) or one
    // of a name with no NS does not.
    if q.query_type() == RecordType::DS && kept.iter().any(|r| r.record_type() == RecordType::NSEC)
    {
        let delegation = kept.iter().any(|r| {
            r.try_borrow::<NSEC>()
                .filter(|n| n.name() == q.name())
                .is_some_and(|n| {
                    let types: Vec<RecordType> = n.data().type_bit_maps().collect();
                    types.contains(&RecordType::NS)
                        && !types.contains(&RecordType::SOA)
                        && !types.contains(&RecordType::DS)
                })
        });
        if !delegation {
            return Err(ProtoError::from(format!(
                "{}: a DS denial at a name that is not a delegation",
                q.name()
            )));
        }
    }
    Ok(kept)
}

/// The records of a lookup of `name`/`rtype` that answer it: the CNAME
/// chain from `name` (in order) and the records of `rtype` at its end.
/// Anything else an answer carried (an unrelated CNAME slipped into a
/// section) is left out, so it cannot sway a judgment of the answer.
pub fn answer_chain<'a>(records: &'a [Record], name: &Name, rtype: RecordType) -> Vec<&'a Record> {
    let mut out = Vec::new();
    let mut at = name.clone();
    for _ in 0..records.len() {
        let next = records
            .iter()
            .find(|r| r.record_type() == RecordType::CNAME && r.name() == &at && !out.contains(r));
        match next.and_then(|r| match r.data() {
            RData::CNAME(c) => Some((r, c.0.clone())),
            _ => None,
        }) {
            Some((r, target)) => {
                out.push(r);
                at = target;
            }
            None => break,
        }
    }
    out.extend(
        records
            .iter()
            .filter(|r| r.record_type() == rtype && r.name() == &at),
    );
    out
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

    fn name(n: &str) -> Name {
        Name::from_ascii(n).unwrap()
    }

    fn soa(owner: &str) -> Record {
        use hickory_resolver::proto::rr::rdata::SOA;
        Record::from_rdata(
            name(owner),
            60,
            RData::SOA(SOA::new(name("ns."), name("admin."), 1, 1, 1, 1, 60)),
        )
    }

    fn nsec(owner: &str, next: &str, types: &[RecordType]) -> Record {
        Record::from_rdata(
            name(owner),
            60,
            RData::DNSSEC(DNSSECRData::NSEC(NSEC::new(name(next), types.to_vec()))),
        )
    }

    fn types(records: &[Record]) -> Vec<(String, RecordType)> {
        records
            .iter()
            .map(|r| (r.name().to_ascii(), r.record_type()))
            .collect()
    }

    #[test]
    fn a_denial_speaks_only_for_the_zone_that_encloses_the_name() {
        let q = Query::query(name("_25._tcp.mx.victim.example."), RecordType::TLSA);
        let kept = screen_denial(
            &q,
            vec![
                soa("victim.example."),
                soa("evil.example."),
                nsec(
                    "_25._tcp.mx.victim.example.",
                    "www.victim.example.",
                    &[RecordType::A],
                ),
                // Another zone's NSEC "covering" the name, signed by it.
                nsec("a.evil.example.", "zzz.", &[RecordType::A]),
                // The parent's side of a cut above the name.
                nsec(
                    "mx.victim.example.",
                    "zzz.victim.example.",
                    &[RecordType::NS],
                ),
                // Not part of a denial.
                Record::from_rdata(
                    name("victim.example."),
                    60,
                    RData::A(hickory_resolver::proto::rr::rdata::A::new(192, 0, 2, 1)),
                ),
                rrsig("a.evil.example.", "evil.example."),
                rrsig("_25._tcp.mx.victim.example.", "evil.example."),
            ],
        )
        .unwrap();
        assert_eq!(
            types(&kept),
            vec![
                ("victim.example.".into(), RecordType::SOA),
                ("_25._tcp.mx.victim.example.".into(), RecordType::NSEC),
            ]
        );
    }

    #[test]
    fn only_an_nsec_with_ns_at_the_name_proves_an_insecure_delegation() {
        let ds = |n: &str| Query::query(name(n), RecordType::DS);
        let zone = soa("victim.example.");
        // A real delegation: NS, no DS, no SOA.
        let cut = nsec(
            "sub.victim.example.",
            "z.victim.example.",
            &[RecordType::NS],
        );
        assert!(screen_denial(&ds("sub.victim.example."), vec![zone.clone(), cut]).is_ok());
        // A host name (records stripped of their signatures would pass as
        // insecure): not a delegation.
        let host = nsec("mx.victim.example.", "z.victim.example.", &[RecordType::A]);
        let e = screen_denial(&ds("mx.victim.example."), vec![zone.clone(), host]).unwrap_err();
        assert!(e.to_string().contains("not a delegation"), "{e}");
        // An empty non-terminal: only a covering NSEC.
        let cover = nsec(
            "_25._tcp.mx.victim.example.",
            "z.victim.example.",
            &[RecordType::TLSA],
        );
        assert!(screen_denial(&ds("_tcp.mx.victim.example."), vec![zone.clone(), cover]).is_err());
        // A zone apex's own NSEC (the child side) is no proof either.
        let apex = nsec(
            "victim.example.",
            "a.victim.example.",
            &[RecordType::NS, RecordType::SOA],
        );
        assert!(screen_denial(&ds("victim.example."), vec![soa("example."), apex]).is_err());
    }

    #[test]
    fn foreign_signatures_are_dropped_from_every_section() {
        let mut m = Message::query();
        m.add_answer(rrsig("mx.victim.example.", "evil.example."));
        m.add_answer(rrsig("mx.victim.example.", "victim.example."));
        m.add_name_server(rrsig("victim.example.", "evil.example."));
        m.add_additional(rrsig("x.victim.example.", "evil.example."));
        let r = screen(Ok(DnsResponse::from_message(m).unwrap()), None).unwrap();
        assert_eq!(r.answers().len(), 1);
        assert!(r.name_servers().is_empty() && r.additionals().is_empty());
    }
}
