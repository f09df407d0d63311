// Entry point: session, header, and a hash router over the pages
// (#/login, #/worklist, #/exam/{id}, #/admin).
import { api, ApiError } from "./api.js";
import { t, lang, setLang } from "./i18n.js";
import { h, fill, toast } from "./dom.js";
import { worklistPage } from "./worklist.js";
import { examPage } from "./exam.js";
import { adminPage } from "./admin.js";

const session = { user: null, leave: null };

async function currentUser() {
  if (!session.user) session.user = await api("/api/auth/me");
  return session.user;
}

function header(user) {
  const top = document.getElementById("top");
  document.title = t("app_title");
  document.documentElement.lang = lang() === "zh" ? "zh-CN" : "en";
  const nav = [];
  if (user) {
    nav.push(h("a", { href: "#/worklist", id: "nav-worklist" }, t("nav_worklist")));
    if (user.role === "admin") nav.push(h("a", { href: "#/admin", id: "nav-admin" }, t("nav_admin")));
  }
  fill(
    top,
    h("div", { class: "brand" }, t("app_title")),
    h("nav", {}, nav),
    h("div", { class: "spacer" }),
    user ? h("span", { class: "who", id: "who" }, `${user.display_name || user.username} · ${t("role_" + user.role)}`) : null,
    h(
      "button",
      { class: "link", id: "lang-switch", onclick: () => { setLang(lang() === "zh" ? "en" : "zh"); route(); } },
      lang() === "zh" ? "English" : "中文",
    ),
    user ? h("button", { class: "link", id: "logout", onclick: logout }, t("logout")) : null,
  );
}

async function logout() {
  try {
    await api("/api/auth/logout", { method: "POST" });
  } catch (e) {
    // Logging out of an already expired session is still a logout.
  }
  session.user = null;
  location.hash = "#/login";
}

function loginPage(main) {
  header(null);
  const user = h("input", { id: "username", name: "username", autocomplete: "username", required: true });
  const pass = h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const error = h("p", { class: "error", id: "login-error", role: "alert" });
  const form = h(
    "form",
    { class: "login", id: "login-form" },
    h("h1", {}, t("login_title")),
    h("label", {}, t("username"), user),
    h("label", {}, t("password"), pass),
    error,
    h("button", { class: "primary", type: "submit" }, t("login")),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    try {
      await api("/api/auth/login", { method: "POST", body: { username: user.value.trim(), password: pass.value } });
      session.user = null;
      const next = sessionStorage.getItem("after-login");
      sessionStorage.removeItem("after-login");
      location.hash = next && next !== "#/login" ? next : "#/";
    } catch (err) {
      error.textContent = err.status === 401 ? t("login_failed") : err.status === 429 || err.status === 423 ? t("login_locked") : err.message;
    }
  });
  fill(main, form);
  user.focus();
}

// Navigations run one after another: a page still loading when the next is asked for
// finishes (and is left) first, so two pages never draw into one another.
let routing = Promise.resolve();
function route() {
  routing = routing.then(show, show);
  return routing;
}

async function show() {
  if (session.leave) {
    try {
      session.leave();
    } catch (e) {
      console.error(e);
    }
    session.leave = null;
  }
  const main = document.getElementById("main");
  main.className = "";
  const hash = location.hash || "#/";
  if (hash === "#/login") return loginPage(main);
  let user;
  try {
    user = await currentUser();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return undefined; // api() went to the login page
    fill(main, h("p", { class: "error" }, e.message));
    return undefined;
  }
  header(user);
  fill(main, h("p", { class: "muted" }, t("loading")));
  try {
    const exam = hash.match(/^#\/exam\/(\d+)/);
    if (exam) session.leave = await examPage(main, user, Number(exam[1]));
    // Administrators see no patient data: their home is the admin page.
    else if (hash.startsWith("#/admin") || (user.role === "admin" && !hash.startsWith("#/worklist")))
      session.leave = await adminPage(main, user);
    else session.leave = await worklistPage(main, user);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) {
      fill(main, h("p", { class: "error", role: "alert" }, e.message));
      toast(e.message, "error");
    }
  }
  return undefined;
}

window.addEventListener("hashchange", route);
route();
