//! Pages of a list, in the shape OpenAI's list endpoints use: `?limit=` (1 to 1,000, default 100) and
//! `?after=<id>` (the last id of the previous page) in; `{"object": "list", "data", "first_id", "last_id",
//! "has_more"}` out. An `after` that names nothing in the list is a 404 naming the field. Lists are oldest first, so a page, once full, never changes under a reader who
//! walks them with `after`.

use serde_json::{Value, json};

use super::ApiError;

pub(super) const DEFAULT_LIMIT: usize = 100;
pub(super) const MAX_LIMIT: usize = 1_000;

/// What a list request asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Page {
    pub limit: usize,
    pub after: Option<String>,
}

impl Page {
    /// Reads `limit` and `after` from a query string; any other parameter is a 400 naming it.
    pub fn from_query(query: &str) -> Result<Page, ApiError> {
        let mut page = Page { limit: DEFAULT_LIMIT, after: None };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "limit" => {
                    page.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| ApiError::invalid("limit", "must be a whole number from 1 to 1000"))?;
                }
                "after" if !value.is_empty() && value.len() <= 64 && value.bytes().all(is_id_byte) => {
                    page.after = Some(value.to_owned());
                }
                "after" => return Err(ApiError::invalid("after", "must be an id from an earlier page")),
                other => return Err(ApiError::invalid(other, "is not a query parameter of this endpoint")),
            }
        }
        Ok(page)
    }

    /// The answer when `after` names nothing in the list (an id of another account's is nothing too).
    pub fn unknown_cursor() -> ApiError {
        ApiError {
            field: Some("after".to_owned()),
            ..ApiError::new(http::StatusCode::NOT_FOUND, "not_found", "`after` is not an id in this list")
        }
    }

    /// The list body for `rows`, read with one more than the limit: the extra row only tells that
    /// there is more.
    pub fn body<T>(&self, mut rows: Vec<T>, id: impl Fn(&T) -> String, view: impl Fn(&T) -> Value) -> Value {
        let has_more = rows.len() > self.limit;
        rows.truncate(self.limit);
        json!({
            "object": "list",
            "data": rows.iter().map(view).collect::<Vec<_>>(),
            "first_id": rows.first().map(&id),
            "last_id": rows.last().map(&id),
            "has_more": has_more,
        })
    }
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_cursors_are_checked() {
        assert_eq!(Page::from_query("").unwrap(), Page { limit: 100, after: None });
        let page = Page::from_query("limit=2&after=acct_abc").unwrap();
        assert_eq!(page, Page { limit: 2, after: Some("acct_abc".into()) });
        for (query, field) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=-1", "limit"),
            ("after=a%27", "after"),
            ("x=1", "x"),
        ] {
            let err = Page::from_query(query).err().unwrap();
            assert_eq!(err.field.as_deref(), Some(field), "{query}");
        }
    }

    #[test]
    fn a_page_says_whether_more_follow() {
        let page = Page { limit: 2, after: None };
        let body = page.body(vec![1, 2, 3], |n| n.to_string(), |n| json!(n));
        assert_eq!(body, json!({"object": "list", "data": [1, 2], "first_id": "1", "last_id": "2", "has_more": true}));
        let body = page.body(Vec::<u8>::new(), |n| n.to_string(), |n| json!(n));
        assert_eq!(body["has_more"], false);
        assert_eq!(body["first_id"], Value::Null);
    }
}
