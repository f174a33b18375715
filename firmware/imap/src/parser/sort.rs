//! Parsing of SORT and THREAD (RFC 5256), the RETURN options of SEARCH and
//! SORT (RFC 4731, RFC 5267) and CANCELUPDATE (RFC 5267 4.3).

use super::{Command, Cursor, LIST_ITEMS_MAX, R, SearchKey};
use crate::sort::{SORT_KEYS_MAX, SortCriterion, SortKey};
use crate::thread::Algorithm;

/// Most search contexts one CANCELUPDATE names.
const CANCEL_TAGS_MAX: usize = 100;

/// RETURN options of SEARCH and SORT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReturnOpts {
    pub min: bool,
    pub max: bool,
    pub all: bool,
    pub count: bool,
    /// RFC 5182 2.1 (SEARCHRES): keep the result for `$`.
    pub save: bool,
    /// RFC 5267 4.3: keep the result up to date (ADDTO/REMOVEFROM).
    pub update: bool,
    /// RFC 5267 4.4: positions `from..=to` (1-based) of the result.
    pub partial: Option<(u32, u32)>,
}

impl Cursor<'_> {
    /// `RETURN (...)` after SEARCH or SORT, and the space after it.
    pub(super) fn return_opts(&mut self) -> R<Option<ReturnOpts>> {
        if !self.keyword("RETURN") {
            return Ok(None);
        }
        self.sp()?;
        self.open()?;
        let mut o = ReturnOpts::default();
        let mut n = 0;
        if self.eat(b')') {
            // RFC 4731 3.1: an empty list means ALL.
            o.all = true;
        } else {
            loop {
                let a = self.atom()?.to_ascii_uppercase();
                match a.as_str() {
                    "MIN" => o.min = true,
                    "MAX" => o.max = true,
                    "ALL" => o.all = true,
                    "COUNT" => o.count = true,
                    "SAVE" => o.save = true,
                    // RFC 5267 4.2: CONTEXT is a hint; results are always
                    // computed afresh here.
                    "CONTEXT" => {}
                    "UPDATE" => o.update = true,
                    "PARTIAL" => {
                        self.sp()?;
                        let a = self.number32()?;
                        if !self.eat(b':') {
                            return Err("PARTIAL takes a range n:m".into());
                        }
                        let b = self.number32()?;
                        if a == 0 || b == 0 {
                            return Err("PARTIAL positions start at 1".into());
                        }
                        o.partial = Some((a.min(b), a.max(b)));
                    }
                    _ => return Err(format!("unknown RETURN option {a}")),
                }
                n += 1;
                if n > 16 {
                    return Err("too many RETURN options".into());
                }
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
        }
        self.depth -= 1;
        if o.partial.is_some() && o.all {
            // RFC 5267 4.4: PARTIAL and ALL are mutually exclusive.
            return Err("PARTIAL and ALL together".into());
        }
        self.sp()?;
        Ok(Some(o))
    }

    /// `[CHARSET x] criteria` (SEARCH), or `charset criteria` (SORT and
    /// THREAD, where the charset is required): only UTF-8 and US-ASCII,
    /// others NO [BADCHARSET] as for SEARCH (RFC 3501 6.4.4).
    pub(super) fn charset_criteria(&mut self, required: bool) -> R<SearchKey> {
        if required || self.keyword("CHARSET") {
            if !required {
                self.sp()?;
            }
            let cs = self.astring_text()?;
            if !cs.eq_ignore_ascii_case("UTF-8") && !cs.eq_ignore_ascii_case("US-ASCII") {
                return Err(format!(
                    "[BADCHARSET (UTF-8 US-ASCII)] {cs} is not supported"
                ));
            }
            self.sp()?;
        }
        let mut keys = Vec::new();
        loop {
            keys.push(self.search_key()?);
            if keys.len() > LIST_ITEMS_MAX {
                return Err("too many search keys".into());
            }
            if !self.eat(b' ') {
                break;
            }
        }
        Ok(if keys.len() == 1 {
            keys.remove(0)
        } else {
            SearchKey::And(keys)
        })
    }

    /// SORT [RETURN (...)] (sort-criteria) charset search-criteria.
    pub(super) fn sort(&mut self, uid: bool) -> R<Command> {
        self.sp()?;
        let ret = self.return_opts()?;
        self.open()?;
        let mut program = Vec::new();
        loop {
            let mut reverse = false;
            let mut a = self.atom()?;
            if a.eq_ignore_ascii_case("REVERSE") {
                reverse = true;
                self.sp()?;
                a = self.atom()?;
            }
            let key = SortKey::from_atom(&a).ok_or_else(|| format!("unknown sort key {a}"))?;
            program.push(SortCriterion { reverse, key });
            if program.len() > SORT_KEYS_MAX {
                return Err("too many sort keys".into());
            }
            if self.eat(b')') {
                break;
            }
            self.sp()?;
        }
        self.depth -= 1;
        self.sp()?;
        let criteria = self.charset_criteria(true)?;
        Ok(Command::Sort {
            uid,
            program,
            criteria,
            ret,
        })
    }

    /// THREAD algorithm charset search-criteria.
    pub(super) fn thread(&mut self, uid: bool) -> R<Command> {
        self.sp()?;
        let a = self.atom()?;
        let algorithm = match a.to_ascii_uppercase().as_str() {
            "ORDEREDSUBJECT" => Algorithm::OrderedSubject,
            "REFERENCES" => Algorithm::References,
            _ => return Err(format!("unknown THREAD algorithm {a}")),
        };
        self.sp()?;
        let criteria = self.charset_criteria(true)?;
        Ok(Command::Thread {
            uid,
            algorithm,
            criteria,
        })
    }

    /// CANCELUPDATE tag... (RFC 5267 4.3).
    pub(super) fn cancel_update(&mut self) -> R<Command> {
        let mut tags = Vec::new();
        while self.eat(b' ') {
            tags.push(String::from_utf8_lossy(&self.string()?).into_owned());
            if tags.len() > CANCEL_TAGS_MAX {
                return Err("too many tags".into());
            }
        }
        if tags.is_empty() {
            return Err("CANCELUPDATE needs a tag".into());
        }
        Ok(Command::CancelUpdate(tags))
    }
}
