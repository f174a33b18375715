//! Replies, and every error's status and body in one place.
//!
//! Preconditions are reported as RFC 4918 16 / RFC 6352 6.3.2.1 want them:
//! the status and a `DAV:error` body naming the precondition.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use crate::xml::{CARDDAV, DAV, escape};

/// One reply, before it becomes an HTTP response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: Option<&'static str>,
    pub headers: Vec<(HeaderName, String)>,
    pub body: Bytes,
}

/// The methods served (RFC 4918 10.1 `Allow`).
pub const ALLOW: &str = "OPTIONS, GET, HEAD, PUT, DELETE, PROPFIND, PROPPATCH, REPORT";

/// Everything that ends a request early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DavError {
    /// No or wrong credentials (the two are not told apart).
    Unauthenticated,
    /// The shared login limiter refused the attempt.
    TooManyAttempts,
    /// The store could not check the password.
    Unavailable,
    /// Nothing at this URL for this user (another mailbox's books too).
    NotFound,
    /// The method does not apply to this resource.
    NotAllowed,
    /// Refused for a reason with no precondition element (RFC 4918 9.3.1).
    Forbidden(&'static str),
    BadRequest(String),
    /// A body over its limit (bytes).
    TooLarge(usize),
    /// The memory budget for client data is spent: try again.
    Busy,
    /// The body did not arrive within the deadline.
    RequestTimeout,
    /// A precondition in the `DAV:` namespace, with its status.
    Dav(StatusCode, &'static str),
    /// A precondition in the CardDAV namespace, with its status.
    Card(StatusCode, &'static str, String),
    /// If-Match / If-None-Match failed (RFC 7232 4.2).
    PreconditionFailed,
    /// The book or the mailbox's quota has no room (RFC 4918 11.5).
    InsufficientStorage(String),
    Unsupported(&'static str),
    Internal(String),
}

impl From<mxrack_store::StoreError> for DavError {
    fn from(e: mxrack_store::StoreError) -> DavError {
        use mxrack_store::StoreError as E;
        match e {
            E::NotFound { .. } => DavError::NotFound,
            E::Duplicate { .. } => DavError::PreconditionFailed,
            E::Invalid {
                what: "address book",
                why,
            } => DavError::InsufficientStorage(format!("the address book is {why}")),
            E::AddressBookOverLimit { .. } | E::NoSpace => {
                DavError::InsufficientStorage(e.to_string())
            }
            E::Invalid { what, why } => DavError::Card(
                StatusCode::FORBIDDEN,
                "valid-address-data",
                format!("invalid {what}: {why}"),
            ),
            E::Closed => DavError::Unavailable,
            other => DavError::Internal(other.to_string()),
        }
    }
}

impl From<mxrack_ldap::entry::Refusal> for DavError {
    fn from(r: mxrack_ldap::entry::Refusal) -> DavError {
        use mxrack_ldap::LdapResultCode as C;
        match r.code {
            C::AdminLimitExceeded => DavError::InsufficientStorage(r.message),
            C::NoSuchObject => DavError::NotFound,
            C::EntryAlreadyExists => DavError::PreconditionFailed,
            C::Unavailable => DavError::Unavailable,
            C::Other | C::UnwillingToPerform => DavError::Internal(r.message),
            _ => DavError::Card(StatusCode::FORBIDDEN, "valid-address-data", r.message),
        }
    }
}

impl Reply {
    pub fn new(status: StatusCode) -> Reply {
        Reply {
            status,
            content_type: None,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn with_body(mut self, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
        self.content_type = Some(content_type);
        self.body = body.into();
        self
    }

    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    pub fn text(status: StatusCode, text: &str) -> Reply {
        Reply::new(status).with_body("text/plain; charset=utf-8", format!("{text}\n"))
    }

    /// 207 Multi-Status with an XML body.
    pub fn multistatus(xml: String) -> Reply {
        Reply::new(StatusCode::MULTI_STATUS).with_body("application/xml; charset=utf-8", xml)
    }

    pub fn redirect(to: &str) -> Reply {
        Reply::text(StatusCode::MOVED_PERMANENTLY, &format!("see {to}"))
            .header(header::LOCATION, to)
    }

    /// RFC 4918 10.1 and RFC 6352 6.1: the compliance classes.
    pub fn options() -> Reply {
        Reply::new(StatusCode::OK)
            .header(HeaderName::from_static("dav"), "1, 3, addressbook")
            .header(header::ALLOW, ALLOW)
    }
}

fn error_body(ns: &str, name: &str, text: &str) -> String {
    let prefix = if ns == CARDDAV { "C" } else { "D" };
    let mut body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:error xmlns:D=\"{DAV}\" xmlns:C=\"{CARDDAV}\"><{prefix}:{name}/>"
    );
    if !text.is_empty() {
        body.push_str(&format!(
            "<D:responsedescription>{}</D:responsedescription>",
            escape(text)
        ));
    }
    body.push_str("</D:error>\n");
    body
}

/// The reply for an error: the one mapping of errors to the wire.
pub fn error(e: &DavError) -> Reply {
    match e {
        DavError::Unauthenticated => Reply::text(
            StatusCode::UNAUTHORIZED,
            "log in with your mailbox address and password",
        )
        .header(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"mxrack\", charset=\"UTF-8\"",
        ),
        DavError::TooManyAttempts => Reply::text(
            StatusCode::TOO_MANY_REQUESTS,
            "too many login attempts, try again later",
        )
        .header(header::RETRY_AFTER, "60"),
        DavError::Unavailable => Reply::text(StatusCode::SERVICE_UNAVAILABLE, "try again shortly")
            .header(header::RETRY_AFTER, "5"),
        DavError::Busy => Reply::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is busy, try again shortly",
        )
        .header(header::RETRY_AFTER, "5"),
        DavError::NotFound => Reply::text(StatusCode::NOT_FOUND, "not found"),
        DavError::Forbidden(why) => Reply::text(StatusCode::FORBIDDEN, why),
        DavError::RequestTimeout => {
            Reply::text(StatusCode::REQUEST_TIMEOUT, "the body took too long")
                .header(header::CONNECTION, "close")
        }
        DavError::NotAllowed => {
            Reply::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
                .header(header::ALLOW, ALLOW)
        }
        DavError::BadRequest(why) => Reply::text(StatusCode::BAD_REQUEST, why),
        DavError::TooLarge(limit) => Reply::text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the body is larger than {limit} bytes"),
        ),
        DavError::Dav(status, name) => Reply::new(*status)
            .with_body("application/xml; charset=utf-8", error_body(DAV, name, "")),
        DavError::Card(status, name, why) => Reply::new(*status).with_body(
            "application/xml; charset=utf-8",
            error_body(CARDDAV, name, why),
        ),
        DavError::PreconditionFailed => Reply::text(
            StatusCode::PRECONDITION_FAILED,
            "the resource is not in the state the request expects",
        ),
        DavError::InsufficientStorage(why) => Reply::text(StatusCode::INSUFFICIENT_STORAGE, why),
        DavError::Unsupported(why) => Reply::text(StatusCode::UNSUPPORTED_MEDIA_TYPE, why),
        DavError::Internal(why) => {
            tracing::error!(error = %why, "CardDAV: internal error");
            Reply::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; nothing was changed",
            )
        }
    }
}

/// The HTTP response, with the headers every answer of the web port has.
pub fn into_response(r: Reply) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(r.body));
    *resp.status_mut() = r.status;
    let h = resp.headers_mut();
    if let Some(ct) = r.content_type {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'"),
    );
    for (name, value) in r.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.append(name, v);
        }
    }
    resp
}
