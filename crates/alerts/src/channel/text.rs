//! Bounding text: a message to a robot's limit, and an error's text to what
//! may be stored and shown (short, and without the channel's secrets).

use reqwest::Url;

const ELLIPSIS: &str = "…";

/// The most characters an error's text keeps: enough for a robot's errmsg
/// or a mail server's answer, not a whole HTML error page.
const ERROR_MAX_CHARS: usize = 300;

/// `text` in at most `max_bytes` bytes of UTF-8, cut at a char boundary and
/// ending with "…" (within the limit) when it was cut: the robots reject a
/// longer message outright instead of cutting it themselves.
pub(crate) fn truncate_utf8(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    if max_bytes < ELLIPSIS.len() {
        return text[..text.floor_char_boundary(max_bytes)].to_owned();
    }
    let mut out = text[..text.floor_char_boundary(max_bytes - ELLIPSIS.len())].to_owned();
    out.push_str(ELLIPSIS);
    out
}

/// Replaces a channel's secrets in text that goes into an error: robots echo
/// the key they refused, servers echo what they were sent, and an error is
/// stored and shown where the secrets must not be.
#[derive(Default)]
pub(crate) struct Redactor {
    /// Longest first, so that a URL goes as a whole before its parts.
    needles: Vec<String>,
}

impl Redactor {
    pub(crate) fn add(&mut self, secret: &str) {
        // An empty needle would match between every two characters.
        if !secret.is_empty() && !self.needles.iter().any(|n| n == secret) {
            self.needles.push(secret.to_owned());
            self.needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        }
    }

    /// A URL as configured and as parsed, and every part of it that may be a
    /// token: query values (raw and decoded) and the longer path segments
    /// (Feishu's hook token is the path's last segment). Short segments such
    /// as "v2" or "send" name the API, not the robot.
    pub(crate) fn add_url(&mut self, configured: &str, url: &Url) {
        self.add(configured);
        self.add(url.as_str());
        if let Some(query) = url.query() {
            for pair in query.split('&') {
                self.add(pair.split_once('=').map_or("", |(_, value)| value));
            }
        }
        for (_, value) in url.query_pairs() {
            self.add(&value);
        }
        for segment in url.path_segments().into_iter().flatten() {
            if segment.len() >= 8 {
                self.add(segment);
            }
        }
    }

    /// `text` without the secrets, at most [`ERROR_MAX_CHARS`] long.
    pub(crate) fn clean(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for needle in &self.needles {
            text = text.replace(needle.as_str(), "[redacted]");
        }
        if text.chars().count() > ERROR_MAX_CHARS {
            text = text.chars().take(ERROR_MAX_CHARS).collect();
            text.push_str(ELLIPSIS);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_whole() {
        assert_eq!(truncate_utf8("告警", 6), "告警");
        assert_eq!(truncate_utf8("", 0), "");
    }

    #[test]
    fn long_text_is_cut_at_a_char_boundary_with_an_ellipsis_within_the_limit() {
        let text = "告警".repeat(1_000);
        for max in [2_048, 2_047, 2_046, 4_096, 10] {
            let cut = truncate_utf8(&text, max);
            assert!(cut.len() <= max, "{max}: {}", cut.len());
            assert!(cut.len() + 3 > max, "{max}: cut no more than needed");
            assert!(cut.ends_with('…'));
            assert!(text.starts_with(cut.trim_end_matches('…')));
        }
        assert_eq!(truncate_utf8("abcdef", 4), "a…");
    }

    #[test]
    fn a_limit_smaller_than_the_ellipsis_cuts_without_one() {
        assert_eq!(truncate_utf8("abcdef", 2), "ab");
        assert_eq!(truncate_utf8("告警", 2), "");
    }

    #[test]
    fn secrets_and_url_parts_are_redacted() {
        let url = Url::parse("https://oapi.example.com/robot/send?access_token=tok%2Ben12345&x=1").unwrap();
        let mut redactor = Redactor::default();
        redactor.add_url(url.as_str(), &url);
        redactor.add("SECret");
        redactor.add("");
        let text = format!("bad {url} token tok+en12345 tok%2Ben12345 secret SECret");
        let clean = redactor.clean(&text);
        assert_eq!(clean, "bad [redacted] token [redacted] [redacted] secret [redacted]");
        assert_eq!(redactor.clean("the robot path /robot/send"), "the robot path /robot/send");
    }

    #[test]
    fn feishu_hook_tokens_in_the_path_are_redacted() {
        let url = Url::parse("https://open.feishu.cn/open-apis/bot/v2/hook/0f1e2d3c-aaaa-bbbb").unwrap();
        let mut redactor = Redactor::default();
        redactor.add_url(url.as_str(), &url);
        assert_eq!(redactor.clean("hook 0f1e2d3c-aaaa-bbbb not found"), "hook [redacted] not found");
    }

    #[test]
    fn error_text_is_capped() {
        let clean = Redactor::default().clean(&"é".repeat(1_000));
        assert_eq!(clean.chars().count(), ERROR_MAX_CHARS + 1);
    }
}
