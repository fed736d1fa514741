//! The browser for the console tests: a headless Chromium driven over WebDriver by a
//! chromedriver of the test's own (on a free loopback port, killed with the test), with a fresh
//! profile. A failing test leaves a screenshot and the page source in
//! `target/console-screenshots/`, where the tests also keep a picture of each main page at a
//! desktop and a phone size.
//!
//! Waiting is polling a condition with the harness's deadline ([`until`]): nothing sleeps and
//! nothing asserts a time.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, Result, anyhow, bail};
use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use serde_json::{Value, json};

use crate::harness::{System, free_port, until};

/// Where the pictures go: failures as `<test>.png` / `<test>.html`, page views as
/// `<page>-<width>.png`.
pub fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("console-screenshots")
}

/// The viewport sizes every main page is pictured at: a laptop and a phone.
pub const DESKTOP: (u32, u32) = (1280, 800);
pub const PHONE: (u32, u32) = (390, 844);

/// The session cookie the console sets (its value is the opaque session id).
pub const SESSION_COOKIE: &str = "pidgr_console";

fn executable(var: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var(var)
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(default));
    path.exists().then_some(path)
}

/// A chromedriver process and the Chromium session it drives; [`Browser::close`] ends both
/// (and dropping it kills the driver, which takes its browser along).
pub struct Browser {
    pub client: Client,
    /// The console's origin, `http://127.0.0.1:<port>`.
    pub base: String,
    test: String,
    driver: tokio::process::Child,
    profile: PathBuf,
}

/// Where Chromium and chromedriver are on this machine.
pub struct Tools {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

/// The browser and its driver, or `None` (said on stderr) when this machine lacks either:
/// the test then passes without running.
pub fn tools(test: &str) -> Option<Tools> {
    match (
        executable("PIDGR_CHROMIUM", "/usr/bin/chromium"),
        executable("PIDGR_CHROMEDRIVER", "/usr/bin/chromedriver"),
    ) {
        (Some(chromium), Some(chromedriver)) => Some(Tools {
            chromium,
            chromedriver,
        }),
        _ => {
            eprintln!("{test}: browser SKIPPED (chromium/chromedriver not found)");
            None
        }
    }
}

impl Browser {
    /// A browser for `test` pointed at `system`'s console.
    pub async fn start(test: &str, tools: &Tools, system: &System) -> Result<Browser> {
        let Tools {
            chromium,
            chromedriver,
        } = tools;
        let port = free_port();
        let driver = tokio::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, with the Chromium it starts: see `Drop`.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", chromedriver.display()))?;
        let webdriver = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        until("chromedriver to be ready", || async {
            let Ok(response) = http.get(format!("{webdriver}/status")).send().await else {
                return Ok(None);
            };
            let status: Value = response.json().await.unwrap_or_default();
            Ok((status["value"]["ready"] == true).then_some(()))
        })
        .await?;

        let profile =
            std::env::temp_dir().join(format!("pidgr-chromium-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&profile)?;
        let capabilities = json!({
            "browserName": "chrome",
            // A confirm() stays open until the test answers it.
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,800",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-search-engine-choice-screen",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object literal")
        };
        // chromedriver listens on loopback in plain HTTP: no TLS stack (fantoccini's TLS
        // features would pull a second crypto provider into the whole workspace).
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&webdriver)
            .await
            .context("opening a Chromium session")?;
        Ok(Browser {
            client,
            base: system.api.clone(),
            test: test.to_owned(),
            driver,
            profile,
        })
    }

    /// Runs the test's body; when it fails or panics, keeps a screenshot and the page source
    /// as `<test>.png` / `<test>.html` first. A panic is handed back, not resumed, so that the
    /// caller can still close the browser before it goes on.
    pub async fn check(
        &self,
        body: impl Future<Output = Result<()>>,
    ) -> std::thread::Result<Result<()>> {
        let outcome = AssertUnwindSafe(body).catch_unwind().await;
        if !matches!(outcome, Ok(Ok(()))) {
            match self.keep_failure().await {
                Ok(path) => eprintln!("{}: the page at the failure: {}", self.test, path.display()),
                Err(e) => eprintln!("{}: no screenshot of the failure: {e:#}", self.test),
            }
        }
        outcome
    }

    async fn keep_failure(&self) -> Result<PathBuf> {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)?;
        let png = dir.join(format!("{}.png", self.test));
        std::fs::write(&png, self.client.screenshot().await?)?;
        let source = self.client.source().await.unwrap_or_default();
        let url = self
            .client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default();
        std::fs::write(
            dir.join(format!("{}.html", self.test)),
            format!("<!-- {url} -->\n{source}"),
        )?;
        Ok(png)
    }

    /// Ends the browser session (Chromium quits), then the driver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    // ---- moving around ----

    /// Opens a console path (`/console/...`).
    pub async fn open(&self, path: &str) -> Result<()> {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .with_context(|| format!("opening {path}"))
    }

    /// The current URL's path and query.
    pub async fn path(&self) -> Result<String> {
        let url = self.client.current_url().await?;
        Ok(match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        })
    }

    /// Waits until the current path satisfies `wanted` (after a click that navigates).
    pub async fn until_path(&self, what: &str, wanted: impl Fn(&str) -> bool) -> Result<String> {
        until(&format!("the browser to be at {what}"), || async {
            let path = self.path().await?;
            Ok(wanted(&path).then_some(path))
        })
        .await
    }

    /// Signs in with `key` on the sign-in page (whatever page the browser is on).
    pub async fn sign_in(&self, key: &str) -> Result<()> {
        self.open("/console/sign-in").await?;
        let input = self.element("input#key").await?;
        input.send_keys(key).await?;
        self.click("button#sign-in").await
    }

    // ---- finding things ----

    /// The first element matching `css` now, if any.
    pub async fn find_now(&self, css: &str) -> Result<Option<Element>> {
        Ok(self
            .client
            .find_all(Locator::Css(css))
            .await?
            .into_iter()
            .next())
    }

    /// Every element matching `css` now.
    pub async fn all(&self, css: &str) -> Result<Vec<Element>> {
        Ok(self.client.find_all(Locator::Css(css)).await?)
    }

    /// Waits until an element matches `css`.
    pub async fn element(&self, css: &str) -> Result<Element> {
        until(&format!("an element {css}"), || self.find_now(css)).await
    }

    /// Whether an element matches `css` now (for what must be absent once the page is there).
    pub async fn has(&self, css: &str) -> Result<bool> {
        Ok(self.find_now(css).await?.is_some())
    }

    pub async fn click(&self, css: &str) -> Result<()> {
        self.element(css)
            .await?
            .click()
            .await
            .with_context(|| format!("clicking {css}"))
    }

    /// The visible text of the element matching `css` (waiting for it).
    pub async fn text(&self, css: &str) -> Result<String> {
        Ok(self.element(css).await?.text().await?.trim().to_owned())
    }

    /// Waits until the text of `css` satisfies `wanted`; answers it.
    pub async fn until_text(&self, css: &str, wanted: impl Fn(&str) -> bool) -> Result<String> {
        until(&format!("the text of {css} to be as expected"), || async {
            let Some(element) = self.find_now(css).await? else {
                return Ok(None);
            };
            // The element may be swapped out by htmx between finding and reading it.
            let text = match element.text().await {
                Ok(text) => text.trim().to_owned(),
                Err(e) if is_stale(&e) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            Ok(wanted(&text).then_some(text))
        })
        .await
    }

    /// Waits until exactly `count` elements match `css`.
    pub async fn until_count(&self, css: &str, count: usize) -> Result<()> {
        until(&format!("{count} elements {css}"), || async {
            Ok((self.all(css).await?.len() == count).then_some(()))
        })
        .await
    }

    /// An attribute of the element matching `css`.
    pub async fn attr(&self, css: &str, name: &str) -> Result<Option<String>> {
        Ok(self.element(css).await?.attr(name).await?)
    }

    /// Replaces the text of a field (input or textarea) and types `text` into it, so the page's
    /// own input handlers run.
    pub async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let field = self.element(css).await?;
        field.clear().await?;
        field.send_keys(text).await?;
        Ok(())
    }

    /// Puts `text` into a field at once and tells the page it changed (long JSON typed key by
    /// key is slow and its editors may auto-indent).
    pub async fn fill(&self, css: &str, text: &str) -> Result<()> {
        let field = self.element(css).await?;
        let element = serde_json::to_value(&field)?;
        self.client
            .execute(
                "arguments[0].value = arguments[1];
                 arguments[0].dispatchEvent(new Event('input', { bubbles: true }));
                 arguments[0].dispatchEvent(new Event('change', { bubbles: true }));",
                vec![element, json!(text)],
            )
            .await?;
        Ok(())
    }

    /// Waits for a `confirm()` (a `data-confirm` form) and accepts it; answers its text.
    pub async fn accept_confirm(&self) -> Result<String> {
        let text = until("a confirmation to be asked", || async {
            match self.client.get_alert_text().await {
                Ok(text) => Ok(Some(text)),
                Err(e) if is_no_alert(&e) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
        .await?;
        self.client.accept_alert().await?;
        Ok(text)
    }

    /// The session cookie's value.
    pub async fn session_cookie(&self) -> Result<String> {
        let cookie = self
            .client
            .get_named_cookie(SESSION_COOKIE)
            .await
            .context("the session cookie")?;
        Ok(cookie.value().to_owned())
    }

    /// The HTTP status of the page the browser is showing (Navigation Timing's).
    pub async fn page_status(&self) -> Result<u64> {
        let status = self
            .client
            .execute(
                "const n = performance.getEntriesByType('navigation')[0];
                 return n ? n.responseStatus : null;",
                vec![],
            )
            .await?;
        status
            .as_u64()
            .ok_or_else(|| anyhow!("no navigation status: {status}"))
    }

    // ---- pictures ----

    /// Keeps a picture of the top of the current page at the desktop and the phone size, as
    /// `<name>-1280.png` and `<name>-390.png`, then goes back to the desktop size.
    pub async fn picture(&self, name: &str) -> Result<()> {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)?;
        for (width, height) in [PHONE, DESKTOP] {
            self.resize(width, height).await?;
            // The page's top, as it opens (a field filled lower down scrolled it).
            self.client
                .execute("window.scrollTo(0, 0);", vec![])
                .await?;
            let png = self.client.screenshot().await?;
            std::fs::write(dir.join(format!("{name}-{width}.png")), png)?;
        }
        Ok(())
    }

    /// Sets the viewport (not the window) to `width`×`height`: the window is a little larger
    /// than its viewport even headless, so the difference is measured and added. A loaded
    /// machine may report a size from before the resize took effect, so the window is adjusted
    /// until the viewport reads right (a few rounds). The pictures are a by-product for people
    /// to look at, not an assertion: one taken at another size is said, not failed.
    async fn resize(&self, width: u32, height: u32) -> Result<()> {
        let (mut window_width, mut window_height) = (width, height);
        let mut viewport = (0, 0);
        for _ in 0..5 {
            self.client
                .set_window_size(window_width, window_height)
                .await?;
            viewport = self.viewport().await?;
            if viewport == (width, height) {
                return Ok(());
            }
            let adjust = |window: u32, want: u32, got: u32| (window + want).saturating_sub(got);
            window_width = adjust(window_width, width, viewport.0);
            window_height = adjust(window_height, height, viewport.1);
        }
        eprintln!(
            "the viewport is {viewport:?}, not {width}×{height}: the picture keeps that size"
        );
        Ok(())
    }

    async fn viewport(&self) -> Result<(u32, u32)> {
        let inner = self
            .client
            .execute("return [window.innerWidth, window.innerHeight];", vec![])
            .await?;
        let side = |i: usize| inner[i].as_u64().and_then(|v| u32::try_from(v).ok());
        side(0)
            .zip(side(1))
            .ok_or_else(|| anyhow!("no viewport size: {inner}"))
    }
}

impl Drop for Browser {
    /// Ends the driver's process group: a Chromium whose session was not closed (a test that
    /// panicked past `close`) outlives a killed chromedriver. Then forgets the profile.
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn is_stale(error: &CmdError) -> bool {
    matches!(error, CmdError::Standard(e) if e.error == fantoccini::error::ErrorStatus::StaleElementReference)
}

fn is_no_alert(error: &CmdError) -> bool {
    matches!(error, CmdError::Standard(e) if e.error == fantoccini::error::ErrorStatus::NoSuchAlert)
}

/// A `reqwest` client that keeps no cookies of its own and follows no redirects: the tests
/// send the browser's cookie by hand and look at each answer.
pub fn plain_http() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// Signs in with `key` outside the browser; answers the session cookie's value.
pub async fn sign_in_with_reqwest(base: &str, key: &str) -> Result<String> {
    let response = plain_http()?
        .post(format!("{base}/console/sign-in"))
        .form(&[("key", key)])
        .send()
        .await?;
    if !response.status().is_redirection() {
        bail!("sign-in answered {}", response.status());
    }
    cookie_from(response.headers()).context("sign-in set no session cookie")
}

fn cookie_from(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, value)| *name == SESSION_COOKIE && !value.is_empty())
        .map(|(_, value)| value.to_owned())
}

/// The CSRF token a page's forms carry (`<input name="csrf" value="...">`).
pub fn csrf_in(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    let rest = &html[at..];
    Some(rest[..rest.find('"')?].to_owned())
}
