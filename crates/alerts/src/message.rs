//! An alert as plain text. Robots and mail show text only (no markup, so
//! that nothing from customs or the card can become a link or a format).

use customs179_core::time::shanghai_time;

use crate::{Alert, AlertKind, Event, Language, Severity};

/// The most of an alert's detail a message carries, in characters: a reason
/// is a sentence; anything longer is not meant for a phone's screen.
const DETAIL_MAX_CHARS: usize = 500;

/// A message's subject (mail) and text (every channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
}

/// `alert` in `language`.
pub fn render(alert: &Alert, language: Language) -> Rendered {
    let words = Words::of(language);
    let marker = match alert.event {
        Event::Cleared => words.resolved,
        Event::Raised => match alert.severity {
            Severity::Critical => words.critical,
            Severity::Warning => words.warning,
            Severity::Info => words.info,
        },
    };
    let mut headline = headline(alert, language);
    if !alert.card.is_empty() {
        headline.push_str(&format!(" [{}{}]", words.card, alert.card));
    }
    let subject = format!("[customs179 {}] {marker}: {headline}", alert.source);
    let mut text = format!("{subject}\n");
    let detail = plain(&alert.detail);
    if !detail.is_empty() {
        text.push_str(&format!("{}{detail}\n", words.detail));
    }
    text.push_str(&format!("{}{}\n", words.since, shanghai_time(alert.since)));
    if alert.event == Event::Cleared {
        let minutes = (alert.at - alert.since).max(0).div_euclid(60_000);
        text.push_str(&format!("{}{minutes}{}\n", words.lasted, words.minutes));
    }
    text.push_str(&format!("{}{}", words.at, shanghai_time(alert.at)));
    Rendered { subject, text }
}

struct Words {
    card: &'static str,
    critical: &'static str,
    warning: &'static str,
    info: &'static str,
    resolved: &'static str,
    detail: &'static str,
    since: &'static str,
    lasted: &'static str,
    minutes: &'static str,
    at: &'static str,
}

impl Words {
    fn of(language: Language) -> Words {
        match language {
            Language::En => Words {
                card: "card ",
                critical: "CRITICAL",
                warning: "WARNING",
                info: "INFO",
                resolved: "RESOLVED",
                detail: "Detail: ",
                since: "Since: ",
                lasted: "Lasted: ",
                minutes: " min",
                at: "Sent: ",
            },
            Language::ZhCn => Words {
                card: "加签卡 ",
                critical: "严重",
                warning: "警告",
                info: "提示",
                resolved: "已恢复",
                detail: "详情：",
                since: "开始时间：",
                lasted: "持续：",
                minutes: " 分钟",
                at: "发送时间：",
            },
        }
    }
}

/// What happened, in one line.
fn headline(alert: &Alert, language: Language) -> String {
    let n = alert.count;
    let level = alert.level.as_str();
    let raised = alert.event == Event::Raised;
    match (language, alert.kind, raised) {
        (Language::En, AlertKind::SigningPaused, true) => "signing is paused".into(),
        (Language::En, AlertKind::SigningPaused, false) => "signing has resumed".into(),
        (Language::En, AlertKind::UploadsStopped, true) => "uploads to customs are stopped".into(),
        (Language::En, AlertKind::UploadsStopped, false) => "uploads to customs have resumed".into(),
        (Language::En, AlertKind::SignerUnreachable, true) => "the card's EportClient is unreachable".into(),
        (Language::En, AlertKind::SignerUnreachable, false) => {
            "the card's EportClient is reachable again".into()
        }
        (Language::En, AlertKind::AtRisk, true) => format!("{n} request(s) close to the deadline"),
        (Language::En, AlertKind::AtRisk, false) => "no request is close to its deadline now".into(),
        (Language::En, AlertKind::Late, true) => format!("{n} request(s) past the deadline"),
        (Language::En, AlertKind::Late, false) => "no request is past its deadline now".into(),
        (Language::En, AlertKind::Certificate, true) if level == "expired" => {
            "the card's certificate has expired".into()
        }
        (Language::En, AlertKind::Certificate, true) => {
            format!("the card's certificate expires within {level} day(s)")
        }
        (Language::En, AlertKind::Certificate, false) => {
            "the card's certificate is valid for more than 30 days".into()
        }
        (Language::En, AlertKind::CustomsErrors, true) => format!("customs answered {n} error(s) recently"),
        (Language::En, AlertKind::CustomsErrors, false) => "customs' errors are back under the limit".into(),
        (Language::En, AlertKind::RequestsFailed, true) => format!("{n} request(s) failed recently"),
        (Language::En, AlertKind::RequestsFailed, false) => "no request failed recently".into(),
        (Language::En, AlertKind::Test, _) => "a test message: this channel works".into(),
        (Language::ZhCn, AlertKind::SigningPaused, true) => "加签已暂停".into(),
        (Language::ZhCn, AlertKind::SigningPaused, false) => "加签已恢复".into(),
        (Language::ZhCn, AlertKind::UploadsStopped, true) => "向海关上传已停止".into(),
        (Language::ZhCn, AlertKind::UploadsStopped, false) => "向海关上传已恢复".into(),
        (Language::ZhCn, AlertKind::SignerUnreachable, true) => "无法连接加签客户端 EportClient".into(),
        (Language::ZhCn, AlertKind::SignerUnreachable, false) => "已重新连接加签客户端 EportClient".into(),
        (Language::ZhCn, AlertKind::AtRisk, true) => format!("{n} 个请求即将超时"),
        (Language::ZhCn, AlertKind::AtRisk, false) => "已无即将超时的请求".into(),
        (Language::ZhCn, AlertKind::Late, true) => format!("{n} 个请求已超时"),
        (Language::ZhCn, AlertKind::Late, false) => "已无超时未上传的请求".into(),
        (Language::ZhCn, AlertKind::Certificate, true) if level == "expired" => "加签证书已过期".into(),
        (Language::ZhCn, AlertKind::Certificate, true) => format!("加签证书将在 {level} 天内过期"),
        (Language::ZhCn, AlertKind::Certificate, false) => "加签证书有效期已超过 30 天".into(),
        (Language::ZhCn, AlertKind::CustomsErrors, true) => format!("海关近期返回 {n} 次错误"),
        (Language::ZhCn, AlertKind::CustomsErrors, false) => "海关返回的错误已回落到阈值以下".into(),
        (Language::ZhCn, AlertKind::RequestsFailed, true) => format!("近期 {n} 个请求失败"),
        (Language::ZhCn, AlertKind::RequestsFailed, false) => "近期无失败的请求".into(),
        (Language::ZhCn, AlertKind::Test, _) => "测试消息：此告警渠道可用".into(),
    }
}

/// `text` on one line, without control characters, at most
/// [`DETAIL_MAX_CHARS`] long: it may come from customs or the card.
fn plain(text: &str) -> String {
    let mut out: String =
        text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(DETAIL_MAX_CHARS).collect();
    if text.chars().count() > DETAIL_MAX_CHARS {
        out.push('…');
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(kind: AlertKind, event: Event) -> Alert {
        Alert {
            id: 7,
            kind,
            severity: Severity::Critical,
            event,
            card: String::new(),
            level: String::new(),
            count: 3,
            detail: "the card refused: 口令错误\r\nsecond line".into(),
            // 2026-12-01T16:03:07.123+08:00, and 5 minutes on.
            since: 1_796_112_187_123,
            at: 1_796_112_187_123 + 5 * 60_000,
            source: "E1".into(),
        }
    }

    #[test]
    fn an_alert_reads_in_english() {
        let r = render(&alert(AlertKind::SigningPaused, Event::Raised), Language::En);
        assert_eq!(r.subject, "[customs179 E1] CRITICAL: signing is paused");
        assert_eq!(
            r.text,
            "[customs179 E1] CRITICAL: signing is paused\n\
             Detail: the card refused: 口令错误  second line\n\
             Since: 2026-12-01T16:03:07.123+08:00\n\
             Sent: 2026-12-01T16:08:07.123+08:00"
        );
    }

    #[test]
    fn an_all_clear_reads_in_chinese_with_how_long_it_lasted() {
        let r = render(&alert(AlertKind::AtRisk, Event::Cleared), Language::ZhCn);
        assert_eq!(r.subject, "[customs179 E1] 已恢复: 已无即将超时的请求");
        assert!(r.text.contains("\n持续：5 分钟\n"), "{}", r.text);
        assert!(r.text.contains("开始时间：2026-12-01T16:03:07.123+08:00"));
    }

    #[test]
    fn counts_and_levels_are_in_the_headline() {
        let mut a = alert(AlertKind::Late, Event::Raised);
        assert!(render(&a, Language::En).subject.ends_with("3 request(s) past the deadline"));
        a.kind = AlertKind::Certificate;
        a.level = "7".into();
        assert!(render(&a, Language::En).subject.ends_with("expires within 7 day(s)"));
        assert!(render(&a, Language::ZhCn).subject.ends_with("加签证书将在 7 天内过期"));
        a.level = "expired".into();
        assert!(render(&a, Language::En).subject.ends_with("certificate has expired"));
        a.card = "card-b".into();
        assert!(render(&a, Language::En).subject.ends_with("certificate has expired [card card-b]"));
        assert!(render(&a, Language::ZhCn).subject.ends_with("[加签卡 card-b]"));
    }

    #[test]
    fn every_kind_and_event_has_words_in_both_languages() {
        for kind in AlertKind::ALL {
            for event in [Event::Raised, Event::Cleared] {
                let en = render(&alert(kind, event), Language::En);
                let zh = render(&alert(kind, event), Language::ZhCn);
                assert_ne!(en.subject, zh.subject, "{kind:?} {event:?}");
            }
        }
    }

    #[test]
    fn a_long_or_hostile_detail_is_one_bounded_line() {
        let mut a = alert(AlertKind::SigningPaused, Event::Raised);
        a.detail = format!("<a href=x>\u{1b}[31m{}", "x".repeat(2_000));
        let text = render(&a, Language::En).text;
        let line = text.lines().nth(1).unwrap();
        assert!(!line.contains('\u{1b}'));
        assert!(line.chars().count() <= "Detail: ".len() + DETAIL_MAX_CHARS + 1);
        assert!(line.ends_with('…'));
        a.detail = "  \n ".into();
        assert!(!render(&a, Language::En).text.contains("Detail"), "an empty detail is left out");
    }
}
