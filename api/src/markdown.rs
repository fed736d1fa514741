//! Markdown to HTML for the inbox, sanitised: whatever a template author writes, no script,
//! event handler, `javascript:` link or raw HTML reaches the app's web view.
//!
//! Nor does any image: an image loaded from elsewhere tells its server who opened the message
//! and when (a read receipt for a third party). A Markdown image shows as its alt text; an
//! `<img>` tag is removed.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd, html};

pub fn to_safe_html(markdown: &str) -> String {
    let parser = Parser::new_ext(
        markdown,
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH,
    )
    // The events between an image's start and end are its alt text: they stay, as text.
    .filter(|event| {
        !matches!(
            event,
            Event::Start(Tag::Image { .. }) | Event::End(TagEnd::Image)
        )
    });
    let mut unsafe_html = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut unsafe_html, parser);
    ammonia::Builder::default()
        .rm_tags(["img"])
        .clean(&unsafe_html)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::to_safe_html;

    #[test]
    fn markdown_becomes_html() {
        let html = to_safe_html("# Hello\n\nPlease **read** [the policy](https://example.com/p).");
        assert!(html.contains("<h1>Hello</h1>"));
        assert!(html.contains("<strong>read</strong>"));
        assert!(html.contains(r#"href="https://example.com/p""#));
    }

    #[test]
    fn images_are_dropped_and_their_alt_text_kept() {
        for (markdown, alt) in [
            (
                "Hello ![the logo](https://tracker.example/px.gif?u=ada)",
                "the logo",
            ),
            ("![](https://tracker.example/px.gif)", ""),
            (
                "[![badge](https://tracker.example/b.svg)](https://example.com/p)",
                "badge",
            ),
            ("<img src=\"https://tracker.example/px.gif\" alt=\"x\">", ""),
            ("![a][ref]\n\n[ref]: https://tracker.example/r.png", "a"),
            ("<p><img src=\"data:image/png;base64,AAAA\"></p>", ""),
        ] {
            let html = to_safe_html(markdown);
            assert!(!html.contains("<img"), "{markdown:?} rendered as {html:?}");
            assert!(
                !html.contains("tracker.example"),
                "{markdown:?} rendered as {html:?}"
            );
            assert!(
                html.contains(alt),
                "{markdown:?} lost its alt text: {html:?}"
            );
        }
        // Links are not images: they stay.
        assert!(
            to_safe_html("[![badge](https://t.example/b.svg)](https://example.com/p)")
                .contains(r#"href="https://example.com/p""#)
        );
    }

    #[test]
    fn no_script_or_raw_html_survives() {
        for attack in [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "[click](javascript:alert(1))",
            "<a href=\"javascript:alert(1)\">x</a>",
            "<iframe src=\"https://evil.example\"></iframe>",
            "<div style=\"position:fixed\" onclick=\"steal()\">x</div>",
            "<svg><script>alert(1)</script></svg>",
        ] {
            let html = to_safe_html(attack).to_lowercase();
            for forbidden in [
                "<script",
                "onerror",
                "javascript:",
                "<iframe",
                "onclick",
                "style=",
            ] {
                assert!(
                    !html.contains(forbidden),
                    "{attack:?} rendered as {html:?}, which contains {forbidden:?}"
                );
            }
        }
    }
}
