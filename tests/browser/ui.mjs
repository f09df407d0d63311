// Browser test of the web UI in Debian's headless Chromium, driven by playwright-core.
// Run by tests/e2e/webui.rs, which starts a hub and a township gateway, sends a CT series
// through the gateway, and passes what it made in the environment:
//   HUB_URL, TOWNSHIP_URL, READER, PASSWORD, EXAM_ID, ARTIFACTS (screenshot folder),
//   LIVE_MARKER (a file written when the worklist is open; the harness then makes a STAT
//   exam ready, which must appear without a reload).
// Exits non-zero with the failing step on stderr; screenshots are kept in ARTIFACTS.
import { chromium } from "playwright-core";
import { writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const HUB = env("HUB_URL");
const TOWNSHIP = env("TOWNSHIP_URL");
const EXAM = env("EXAM_ID");
const ARTIFACTS = env("ARTIFACTS");
mkdirSync(ARTIFACTS, { recursive: true });

let step = "start";
const problems = [];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1366, height: 768 }, locale: "zh-CN" });
context.setDefaultTimeout(20000);
const page = await context.newPage();
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
page.on("console", (m) => {
  if (m.type() === "error" && !/Failed to load resource.*40[134]/.test(m.text())) problems.push(`console: ${m.text()}`);
});
const shot = (p, name) => p.screenshot({ path: join(ARTIFACTS, `${name}.png`) });
const expect = (ok, what) => {
  if (!ok) throw new Error(what);
};

try {
  step = "login page in Chinese";
  await page.goto(`${HUB}/`);
  await page.waitForSelector("#login-form");
  expect((await page.textContent("#login-form h1")) === "登录", "the login page is not in Chinese");
  await shot(page, "01-login");
  await page.fill("#username", env("READER"));
  await page.fill("#password", "wrong password");
  await page.click("#login-form button[type=submit]");
  await page.waitForFunction(() => document.querySelector("#login-error").textContent.length > 0);
  expect((await page.textContent("#login-error")).includes("错误"), "a wrong password is not reported");
  await page.fill("#password", env("PASSWORD"));
  await page.click("#login-form button[type=submit]");

  step = "worklist";
  const row = `#worklist-rows tr[data-exam-id="${EXAM}"]`;
  await page.waitForSelector(row);
  await page.waitForSelector("#live.on");
  const countdown = await page.textContent(`${row} td.deadline`);
  expect(/\d+:\d\d/.test(countdown), `no deadline countdown: ${countdown}`);
  await page.waitForTimeout(1100);
  expect((await page.textContent(`${row} td.deadline`)) !== countdown, "the countdown does not tick");
  await shot(page, "02-worklist");

  step = "live update: a STAT exam appears first without a reload";
  writeFileSync(env("LIVE_MARKER"), "worklist open\n");
  await page.waitForSelector("#worklist-rows tr.prio-stat", { timeout: 30000 });
  const first = await page.getAttribute("#worklist-rows tr:first-child", "class");
  expect(first.includes("prio-stat"), `the STAT exam is not first: ${first}`);
  await shot(page, "03-worklist-live");

  step = "claim and open the exam";
  await page.click(`${row} button.claim`);
  await page.waitForURL(new RegExp(`#/exam/${EXAM}$`));
  await page.waitForSelector("#release");
  await page.waitForSelector("#viewport[data-shown]");
  const total = Number(await page.getAttribute("#viewport", "data-total"));
  expect(total >= 20, `the viewer has ${total} images`);
  await page.waitForSelector("#series-list button.series img");
  await shot(page, "04-viewer");

  step = "scroll the CT with the wheel and the keys";
  const box = await page.locator("#viewport").boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  for (let i = 0; i < 10; i++) {
    await page.mouse.wheel(0, 100);
    await page.waitForTimeout(40);
  }
  await page.waitForFunction(() => document.querySelector("#viewport").dataset.index === "10");
  await page.waitForFunction(() => /\/instances\/[^/]+\/rendered/.test(document.querySelector("#viewport").dataset.shown || ""));
  const shownAt10 = await page.getAttribute("#viewport", "data-shown");
  await page.keyboard.press("ArrowDown");
  await page.waitForFunction(() => document.querySelector("#viewport").dataset.index === "11");
  await page.waitForFunction((before) => document.querySelector("#viewport").dataset.shown !== before, shownAt10);
  expect((await page.textContent("#slice-label")).includes("12 / "), "the slice label does not follow");
  await shot(page, "05-scrolled");

  step = "window presets and window by drag";
  const pixels = () =>
    page.evaluate(() => {
      const c = document.querySelector("#viewport");
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let sum = 0;
      for (let i = 0; i < d.length; i += 4) sum += d[i];
      return sum;
    });
  const before = await pixels();
  await page.click('button[data-preset="preset_lung"]');
  await page.waitForFunction(() => (document.querySelector("#viewport").dataset.shown || "").includes("window=-600,1500"));
  const lung = await pixels();
  expect(lung !== before, "the lung window did not change the picture");
  expect((await page.textContent("#window-label")).includes("1500"), "the window label does not show the lung window");
  await shot(page, "06-lung-window");
  await page.click('button[data-preset="preset_bone"]');
  await page.waitForFunction(() => (document.querySelector("#viewport").dataset.shown || "").includes("window=300,1500"));
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width / 2 - 120, box.y + box.height / 2 - 60, { steps: 8 });
  await page.mouse.up();
  await page.waitForFunction(() => {
    const v = document.querySelector("#viewport");
    return v.dataset.window !== "300,1500" && (v.dataset.shown || "").includes(`window=${v.dataset.window}`);
  });
  await shot(page, "07-window-drag");

  step = "measure a distance in millimetres";
  await page.click('button[data-tool="measure"]');
  await page.mouse.move(box.x + box.width / 2 - 100, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width / 2 + 100, box.y + box.height / 2, { steps: 5 });
  await page.mouse.up();
  const measured = await page.textContent("#measure-label");
  const mm = Number((measured.match(/^([\d.]+) mm$/) || [])[1]);
  // 200 screen pixels across a 512-pixel CT of about 0.7 mm pixels shown about 600 pixels tall.
  expect(mm > 50 && mm < 300, `the measurement reads ${measured}`);
  await shot(page, "07b-measure");
  await page.click('button[data-tool="window"]');

  step = "cine plays through the stack and stops";
  const startIndex = Number(await page.getAttribute("#viewport", "data-index"));
  await page.click("#cine");
  await page.waitForFunction((from) => {
    const i = Number(document.querySelector("#viewport").dataset.index);
    return i !== from && i !== from + 1;
  }, startIndex);
  await page.click("#cine");
  expect((await page.textContent("#cine")).includes("播放"), "cine did not stop");
  const stoppedAt = await page.getAttribute("#viewport", "data-index");
  await page.waitForTimeout(400);
  expect((await page.getAttribute("#viewport", "data-index")) === stoppedAt, "cine goes on after stop");

  step = "write the report (autosave)";
  const fields = page.locator("#fields textarea");
  expect((await fields.count()) > 0, "the template has no fields");
  await fields.nth(0).fill("右肺上叶见一约8毫米磨玻璃结节，边界清楚。");
  if ((await fields.count()) > 1) await fields.nth(1).fill("右肺上叶磨玻璃结节，建议3个月后复查。");
  await page.waitForFunction(() => document.querySelector("#save-status").textContent.includes("已自动保存"), null, { timeout: 10000 });

  step = "sign with the confirmation showing what is signed";
  await page.click("#sign");
  await page.waitForSelector("#sign-preview");
  expect((await page.textContent("#sign-preview")).includes("磨玻璃结节"), "the confirmation does not show the report text");
  await shot(page, "08-sign-confirm");
  await page.click('button[data-choice="sign"]');
  await page.waitForSelector('#history details[data-status="final"]');
  await page.waitForFunction(() => document.querySelector("#exam-status").textContent.includes("已签发"));
  await shot(page, "09-signed");

  step = "amend the final report with a reason";
  await page.click("#history button.amend");
  await page.waitForSelector("#amend-reason");
  await page.locator(".amend-form textarea").first().fill("右肺上叶见一约8毫米磨玻璃结节，边界清楚；左肺下叶见钙化灶。");
  await page.fill("#amend-reason", "补充左肺下叶钙化灶");
  await page.click('button[data-choice="amend"]');
  await page.waitForSelector('#history details[data-version="2"][data-status="amended"]');
  expect((await page.textContent('#history details[data-version="2"]')).includes("补充左肺下叶钙化灶"), "the amendment's reason is not shown");
  await shot(page, "09b-amended");

  step = "English switch";
  await page.click("#lang-switch");
  await page.waitForFunction(() => document.querySelector("#nav-worklist").textContent === "Worklist");
  expect((await page.textContent("#history")).includes("Final"), "the history is not in English");
  await shot(page, "10-english");
  await page.click("#lang-switch");

  step = "the ECG tracing and its measurements";
  await page.goto(`${HUB}/ui/#/exam/${env("ECG_EXAM_ID")}`);
  await page.waitForFunction(() => {
    const img = document.querySelector("#ecg-tracing");
    return img && img.complete && img.naturalWidth > 0;
  });
  await page.waitForSelector("#ecg-measurements tr td");
  expect(/\d+ bpm/.test(await page.textContent("#ecg-measurements")), "no heart rate shown");
  const rate = await page.locator('#fields textarea[data-field="rate"]').inputValue();
  expect(rate.includes("bpm"), `the ECG report is not prefilled from the measurements: ${rate}`);
  await shot(page, "11-ecg");

  step = "the lab results table";
  await page.goto(`${HUB}/ui/#/exam/${env("LAB_EXAM_ID")}`);
  await page.waitForSelector("#lab-results tbody tr");
  const labText = await page.textContent("#lab-results");
  expect(labText.includes("5.9") && labText.includes("3.5-5.3"), `lab table: ${labText}`);
  await shot(page, "12-lab");

  step = "the admin pages: users and the turnaround chart";
  const adminContext = await browser.newContext({ viewport: { width: 1366, height: 768 } });
  const admin = await adminContext.newPage();
  admin.on("pageerror", (e) => problems.push(`admin page error: ${e.message}`));
  await admin.goto(`${HUB}/ui/#/admin/users`);
  await admin.waitForSelector("#login-form");
  await admin.fill("#username", env("ADMIN"));
  await admin.fill("#password", env("PASSWORD"));
  await admin.click("#login-form button[type=submit]");
  await admin.waitForSelector('#users tr[data-username="reader"]');
  await shot(admin, "13-admin-users");
  await admin.click("#tab-turnaround");
  await admin.waitForSelector("#turnaround-chart rect.p50");
  expect((await admin.textContent("#turnaround-table")).includes("local"), "the signed exam's site is not in the turnaround figures");
  await shot(admin, "14-admin-turnaround");
  await admin.click("#tab-deadlines");
  await admin.fill("#deadline-stat", "20");
  await admin.fill("#deadline-ecg-stat", "10");
  await admin.click("#deadlines-save");
  await admin.waitForSelector(".toast.ok");
  await admin.reload();
  await admin.waitForSelector("#deadline-ecg-stat");
  expect((await admin.inputValue("#deadline-stat")) === "20" && (await admin.inputValue("#deadline-ecg-stat")) === "10", "the deadlines were not saved");
  await shot(admin, "15-admin-deadlines");
  await adminContext.close();

  step = "a township clinician follows the exam and its signed report";
  const clinContext = await browser.newContext({ viewport: { width: 1366, height: 768 } });
  const clin = await clinContext.newPage();
  clin.on("pageerror", (e) => problems.push(`clinician page error: ${e.message}`));
  await clin.goto(`${HUB}/`);
  await clin.waitForSelector("#login-form");
  await clin.fill("#username", env("CLINICIAN"));
  await clin.fill("#password", env("PASSWORD"));
  await clin.click("#login-form button[type=submit]");
  await clin.waitForSelector("#filter-status");
  await clin.selectOption("#filter-status", "all");
  await clin.waitForSelector(`#worklist-rows tr[data-exam-id="${EXAM}"]`);
  expect((await clin.locator("#worklist-rows button.claim").count()) === 0, "a clinician is offered a claim");
  expect(!(await clin.textContent("#worklist-rows")).includes("township-a"), "another site's exam is shown to the clinician");
  await clin.click(`#worklist-rows tr[data-exam-id="${EXAM}"] a.button`);
  await clin.waitForSelector("#viewport[data-shown]");
  await clin.waitForSelector('#report details[data-version="2"][open] a[href$="/pdf"]');
  const shown = await clin.textContent('#report details[data-version="2"]');
  expect(shown.includes("钙化灶") && shown.includes("签名有效"), `the clinician's report view: ${shown}`);
  await shot(clin, "16-clinician");
  await clinContext.close();

  step = "the township page shows the report arriving";
  const township = await context.newPage();
  await township.goto(TOWNSHIP);
  await township.waitForSelector("#reports [data-report-id]", { timeout: 60000 });
  expect((await township.textContent("#reports")).length > 0, "empty report list");
  await shot(township, "17-township");

  step = "no errors in the pages";
  expect(problems.length === 0, problems.join("\n"));
  console.log("ui test passed");
} catch (e) {
  await shot(page, "failure").catch(() => {});
  const where = await page.evaluate(() => `${location.href}\n${document.querySelector("main").innerText.slice(0, 2000)}`).catch((err) => String(err));
  console.error(`page at failure: ${where}`);
  console.error(`step failed: ${step}\n${e.stack || e}\n${problems.join("\n")}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
