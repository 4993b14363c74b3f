//! Reports end to end with the real `energyd`: the fixed scenario of
//! `daemon/tests/golden/reports/registry.toml` ingested over HTTP (constant hourly consumption
//! over 2024 and 2025); every report in every format from the API and from `energyd report`
//! (run while the daemon is up) must be the same bytes, and CSV/JSON the golden files; the
//! bureau's page and a printable report are loaded in headless Chromium, their visible figures
//! checked and screenshots kept under `<target>/test-artifacts/reports/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use energy_e2e::{http_client, listening_url, repo_root, Proc};
use energy_wire::{encode_batch, Batch, Quantity, Sample};

/// 2024-01-01T00:00:00+08:00
const START: i64 = 1_704_038_400_000;
const H: i64 = 3_600_000;
const HOURS: i64 = 8784 + 8760;
/// (meter, kWh per hour): as in the daemon's report tests.
const RATES: [(&str, f64); 4] = [("e1", 20.0), ("e1-edu", 4.0), ("e2", 10.0), ("e3", 3.0)];

fn golden_dir() -> PathBuf {
    repo_root().join("daemon/tests/golden/reports")
}

/// `<target>/test-artifacts/reports`, created.
fn artifacts() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().and_then(Path::parent).and_then(Path::parent).unwrap().to_path_buf();
    let dir = target.join("test-artifacts").join("reports");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn ingest(url: &str) {
    let client = http_client();
    let mut seq = 1u64;
    for (meter, rate) in RATES {
        let samples: Vec<Sample> =
            (0..=HOURS).map(|h| Sample { meter: meter.into(), t: START + h * H, v: [(Quantity::ActiveEnergyImport, rate * h as f64)].into_iter().collect() }).collect();
        for chunk in samples.chunks(5000) {
            let body = encode_batch(&Batch::new("e2e-reports", seq, chunk.to_vec()));
            seq += chunk.len() as u64;
            let r = client.post(format!("{url}/api/v1/ingest")).header("content-type", "application/json").body(body).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap_or_default());
        }
    }
}

/// Headless Chromium, or `None` when it cannot start here.
fn chromium() -> Option<&'static str> {
    for c in ["chromium", "chromium-browser"] {
        if Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return Some(c);
        }
    }
    None
}

fn dump_dom(browser: &str, url: &str) -> String {
    let out = Command::new(browser).args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url]).output().unwrap();
    assert!(out.status.success(), "chromium --dump-dom {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn screenshot(browser: &str, url: &str, file: &Path, size: &str) {
    let out = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", &format!("--window-size={size}"), &format!("--screenshot={}", file.display()), url])
        .output()
        .unwrap();
    assert!(out.status.success() && file.exists(), "chromium --screenshot {url}: {}", String::from_utf8_lossy(&out.stderr));
    println!("screenshot: {}", file.display());
}

/// A part of an XLSX file (a zip) as text, with `unzip`; `None` when unzip is not installed.
fn xlsx_part(file: &Path, part: &str) -> Option<String> {
    let out = Command::new("unzip").arg("-p").arg(file).arg(part).output().ok()?;
    assert!(out.status.success(), "unzip -p {} {part}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The workbook's print setup: every sheet A4 (paperSize 9), one page wide, the header frozen
/// and repeated on every page (print titles), the page number in the footer.
fn check_page_setup(kind: &str, file: &Path) {
    let Some(workbook) = xlsx_part(file, "xl/workbook.xml") else {
        println!("SKIPPED: unzip is not installed; the workbook's page setup was not read");
        return;
    };
    let sheets = workbook.matches("<sheet ").count();
    assert!(sheets >= 1, "{kind}: {workbook}");
    assert_eq!(workbook.matches("_xlnm.Print_Titles").count(), sheets, "{kind}: print titles on every sheet: {workbook}");
    for n in 1..=sheets {
        let sheet = xlsx_part(file, &format!("xl/worksheets/sheet{n}.xml")).unwrap();
        assert!(sheet.contains("paperSize=\"9\""), "{kind} sheet {n}: not A4");
        assert!(sheet.contains("fitToPage=\"1\"") || sheet.contains("fitToWidth"), "{kind} sheet {n}: not fitted to the page width");
        assert!(sheet.contains("state=\"frozen\""), "{kind} sheet {n}: the header is not frozen");
        assert!(sheet.contains("第 &amp;P 页，共 &amp;N 页"), "{kind} sheet {n}: no page number in the footer");
        assert!(sheet.contains("<col "), "{kind} sheet {n}: column widths are not set");
    }
}

/// `energyd` on the scenario's registry in a fresh directory, the readings ingested: the
/// directory, the daemon and its URL.
async fn start_scenario() -> (tempfile::TempDir, Proc, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(golden_dir().join("registry.toml"), d.join("registry.toml")).unwrap();
    std::fs::write(d.join("energyd.toml"), "data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n[retention]\nraw_days = 5000\n").unwrap();
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(30)));
    ingest(&url).await;
    (dir, daemon, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_cli_give_the_same_reports_and_chromium_shows_the_figures() {
    let (dir, mut daemon, url) = start_scenario().await;
    let d = dir.path();
    let client = http_client();

    // Every report in every format: the API and the CLI (daemon running) give the same bytes.
    for (kind, path, year) in [
        ("annual", "/api/v1/reports/annual", 2025),
        ("assessment", "/api/v1/reports/assessment", 2025),
        ("plan", "/api/v1/plans/energy", 2026),
        ("statistics", "/api/v1/reports/statistics", 2025),
    ] {
        for (format, ctype) in [
            ("json", "application/json"),
            ("csv", "text/csv; charset=utf-8"),
            ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            ("html", "text/html; charset=utf-8"),
        ] {
            for lang in ["zh", "en"] {
                let r = client.get(format!("{url}{path}?year={year}&format={format}&lang={lang}&as_of=2026-01-01")).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 200, "{kind} {format}");
                let h = r.headers().clone();
                assert_eq!(h["content-type"], ctype);
                let disp = h["content-disposition"].to_str().unwrap().to_string();
                assert!(disp.ends_with(&format!("filename=\"{kind}-{year}.{format}\"")), "{disp}");
                assert_eq!(disp.starts_with("attachment"), format == "csv" || format == "xlsx", "{disp}");
                let api = r.bytes().await.unwrap().to_vec();
                let out = d.join(format!("{kind}-{lang}.{format}"));
                let (code, o, e) = energy_e2e::run(
                    "energyd",
                    &["report", kind, "--config", "energyd.toml", "--year", &year.to_string(), "--format", format, "--lang", lang, "--as-of", "2026-01-01", "--out", out.to_str().unwrap()],
                    d,
                );
                assert_eq!(code, 0, "{o}{e}");
                let cli = std::fs::read(&out).unwrap();
                assert!(api == cli, "{kind} {format} {lang}: the API and the CLI differ ({} and {} bytes)", api.len(), cli.len());
                if lang == "zh" && format == "xlsx" {
                    check_page_setup(kind, &out);
                }
                if lang == "zh" && (format == "csv" || format == "json") {
                    let want = std::fs::read(golden_dir().join(format!("{kind}-{year}.{format}"))).unwrap();
                    assert!(api == want, "{kind} {format}: differs from the golden file the daemon's tests check");
                }
            }
        }
    }

    // Errors name the parameter.
    for (q, needle) in [
        ("/api/v1/reports/annual?year=2025&format=pdf", "format `pdf`"),
        ("/api/v1/reports/annual?year=2025&lang=fr", "lang `fr`"),
        ("/api/v1/reports/assessment?year=twenty", "year `twenty`"),
        ("/api/v1/plans/energy?year=2030&as_of=2026-01-01", "year 2029 has no figures yet"),
        ("/api/v1/reports/annual?year=2025&agency=nobody", "agency `nobody`"),
        ("/api/v1/reports/assessment?year=2025&agency=fin", "unknown parameter `agency`"),
    ] {
        let r = client.get(format!("{url}{q}")).send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert!(status == 400 || status == 404, "{q}: {status}");
        assert!(body.contains(needle), "{q}: {body}");
    }
    let (code, _, err) = energy_e2e::run("energyd", &["report", "annual", "--config", "energyd.toml", "--format", "pdf", "--out", "x"], d);
    assert_eq!(code, 1);
    assert!(err.contains("format `pdf`"), "{err}");

    // Deadlines of 2025 as of 2026-01-01: every agency complete; due 2026-03-31 and 2026-06-30.
    let (s, v) = energy_e2e::get_json(&format!("{url}/api/v1/deadlines?year=2025&as_of=2026-01-01")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["agencies_due"], "2026-03-31");
    assert_eq!(v["bureau_due"], "2026-06-30");
    assert_eq!(v["days_to_agencies_due"], 89);
    assert_eq!(v["incomplete"], 0);

    // The page and the printable report in headless Chromium.
    let Some(browser) = chromium() else {
        println!("SKIPPED: chromium cannot start in this sandbox; the page and the printable report were not loaded in a browser");
        return;
    };
    let art = artifacts();
    // The page (web/) of 2025 as of 1 January 2026, open (no [auth]) on loopback.
    let page = format!("{url}/?period=year&year=2025&as_of=2026-01-01");
    let dom = dump_dom(browser, &page);
    // fin's total energy 2025: 8 kWh/h x 8760 h x 0.1229 = 8612.83 kgce = 8.61 tce; its budget
    // 9000 kgce is met (达标).
    assert!(dom.contains("市财政局") && dom.contains("8.61") && dom.contains("达标"), "{dom}");
    // Deadlines of 2025 (dates in the Chinese form) and the link to every report.
    assert!(dom.contains("2026年3月31日") && dom.contains("2026年6月30日"), "{dom}");
    assert!(dom.contains("href=\"/reports?"), "{dom}");
    assert!(dom.contains("市教育局 &lt;&amp;&gt;"), "registry names are escaped");
    // The monthly chart is drawn (ECharts, embedded in the binary, SVG renderer).
    assert!(dom.contains("data-charts-ready=\"1\"") && dom.contains("<svg"), "{dom}");
    screenshot(browser, &page, &art.join("index.png"), "1280,2400");

    let report = format!("{url}/api/v1/reports/assessment?year=2025&format=html&as_of=2026-01-01");
    let dom = dump_dom(browser, &report);
    // Ranking: fin 90.5 完成 first; edu 38.1 last; the reason of edu's lost points.
    assert!(dom.contains("90.5") && dom.contains("完成") && dom.contains("38.1"), "{dom}");
    assert!(dom.contains("为同类平均值") && dom.contains("<svg"), "{dom}");
    screenshot(browser, &report, &art.join("assessment-2025.png"), "900,1600");
    let annual = format!("{url}/api/v1/reports/annual?year=2025&format=html&lang=en&as_of=2026-01-01");
    let dom = dump_dom(browser, &annual);
    assert!(dom.contains("Energy per floor area") && dom.contains("8,612.83") && dom.contains("whole jurisdiction"), "{dom}");
    screenshot(browser, &annual, &art.join("annual-2025-en.png"), "900,2400");

    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(20)).success());
}

/// The texts of the `<h1>`-`<h3>` headings of an HTML document, tags and character references
/// removed, white space collapsed.
fn headings_of(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for level in ["<h1", "<h2", "<h3"] {
        let close = format!("</{}>", &level[1..]);
        for part in html.split(level).skip(1) {
            let inner = part.split_once('>').map_or("", |(_, r)| r);
            let inner = inner.split(close.as_str()).next().unwrap_or("");
            let mut text = String::new();
            let mut in_tag = false;
            for c in inner.chars() {
                match c {
                    '<' => in_tag = true,
                    '>' => in_tag = false,
                    c if !in_tag => text.push(c),
                    _ => {}
                }
            }
            let text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").replace("&#39;", "'").replace("&quot;", "\"");
            out.push(text.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    out
}

/// Pages of a PDF (pdfinfo), or `None` without poppler-utils.
fn pdf_pages(pdf: &Path) -> Option<usize> {
    let out = Command::new("pdfinfo").arg(pdf).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().find_map(|l| l.strip_prefix("Pages:")).and_then(|n| n.trim().parse().ok())
}

/// The text of page `n` of a PDF (pdftotext).
fn pdf_page_text(pdf: &Path, n: usize) -> String {
    let out = Command::new("pdftotext").args(["-layout", "-f", &n.to_string(), "-l", &n.to_string()]).arg(pdf).arg("-").output().unwrap();
    assert!(out.status.success(), "pdftotext {}: {}", pdf.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every printable Chinese document printed to A4 by headless Chromium: each page numbered
/// "第 i 页，共 N 页" with N the PDF's page count, no page that holds only a heading, the
/// signature block on the last page of the annual report, the assessment and the forms; the
/// pages kept as PNG under `<target>/test-artifacts/reports/print/` (pdftoppm).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printed_documents_are_a4_pages_that_each_hold_more_than_a_heading() {
    let Some(browser) = chromium() else {
        println!("SKIPPED: chromium cannot start in this sandbox; nothing was printed");
        return;
    };
    if Command::new("pdftoppm").arg("-v").output().is_err() {
        println!("SKIPPED: pdftoppm (poppler-utils) is not installed; tests/run.sh installs it");
        return;
    }
    let (_dir, mut daemon, url) = start_scenario().await;
    let art = artifacts().join("print");
    std::fs::create_dir_all(&art).unwrap();
    for (name, path, signed) in [
        ("annual-2025", "/api/v1/reports/annual?year=2025", true),
        ("assessment-2025", "/api/v1/reports/assessment?year=2025", true),
        ("plan-2026", "/api/v1/plans/energy?year=2026", false),
        ("statistics-2025", "/api/v1/reports/statistics?year=2025", true),
    ] {
        // The document's headings, to check that none ends a page (a heading goes with what
        // follows it).
        let html = http_client().get(format!("{url}{path}&format=html&as_of=2026-01-01")).send().await.unwrap().text().await.unwrap();
        let headings = headings_of(&html);
        assert!(headings.len() >= 3, "{name}: {headings:?}");
        let pdf = art.join(format!("{name}.pdf"));
        let _ = std::fs::remove_file(&pdf);
        let out = Command::new(browser)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer", "--print-to-pdf-no-header"])
            .arg(format!("--print-to-pdf={}", pdf.display()))
            .arg(format!("{url}{path}&format=html&as_of=2026-01-01"))
            .output()
            .unwrap();
        assert!(out.status.success() && pdf.exists(), "chromium --print-to-pdf {name}: {}", String::from_utf8_lossy(&out.stderr));
        let pages = pdf_pages(&pdf).expect("pdfinfo reads the page count");
        // Bounds worked out from the scenario: at least the head and one table; the annual
        // report has seven entries (five agencies, 本级, 全辖) of about a page each.
        let (min, max) = match name {
            "annual-2025" => (5, 16),
            "assessment-2025" => (1, 6),
            _ => (1, 5),
        };
        assert!((min..=max).contains(&pages), "{name}: {pages} pages, expected {min}-{max}");
        let mut last = String::new();
        for n in 1..=pages {
            let text = pdf_page_text(&pdf, n);
            let number = format!("第 {n} 页，共 {pages} 页");
            assert!(text.contains(&number), "{name} page {n}: no page number `{number}`:\n{text}");
            // What the page holds besides its number: more than one line (a heading alone is
            // one line), and a table's cells or a paragraph, not only a title.
            let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.contains(&number)).collect();
            assert!(lines.len() >= 3, "{name} page {n} holds only a heading:\n{text}");
            if n < pages {
                let end = lines.last().copied().unwrap_or_default();
                assert!(!headings.iter().any(|h| h == end), "{name} page {n} ends with the heading `{end}`, apart from its table:\n{text}");
            }
            last = text;
        }
        if signed {
            for w in ["填报单位", "负责人", "填报人", "联系电话", "填报日期", "王局长"] {
                assert!(last.contains(w), "{name}: the signature block is not on the last page ({w}):\n{last}");
            }
        }
        let status = Command::new("pdftoppm").args(["-png", "-r", "70"]).arg(&pdf).arg(art.join(name)).status().unwrap();
        assert!(status.success(), "pdftoppm {name}");
        println!("printed: {} ({pages} pages, PNGs beside it)", pdf.display());
    }
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(20)).success());
}
