/* The review app's only script, served from the device (no CDN: the clinic may have no internet).
   It saves round trips and clicks; every form still works without it.
   Sample page: a field review or "confirm all" posts in place (the page's content is replaced by the
   answer, no reload); keys: j/k or arrows next/previous field, 1-9 the class, c confirm as shown,
   a confirm all, s sign-off, n/p next/previous sample. Field page: zoom and pan. */
(function () {
  "use strict";
  var current = -1;

  function fields() { return Array.prototype.slice.call(document.querySelectorAll("section.field[data-field]")); }

  function say(text, error) {
    var live = document.getElementById("live");
    if (!live) return;
    live.textContent = text;
    live.className = "live" + (error ? " error" : "");
    clearTimeout(say.t);
    say.t = setTimeout(function () { live.textContent = ""; }, error ? 8000 : 2500);
  }

  function focusField(i) {
    var fs = fields();
    if (!fs.length) return;
    current = Math.max(0, Math.min(fs.length - 1, i));
    fs.forEach(function (f, k) { f.classList.toggle("current", k === current); });
    fs[current].focus({preventScroll: true});
    fs[current].scrollIntoView({block: "nearest", behavior: "smooth"});
  }

  function replaceMain(html, focusNext) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    var main = doc.querySelector("main");
    if (!main) return;
    var y = window.scrollY;
    document.querySelector("main").innerHTML = main.innerHTML;
    window.scrollTo(0, y);
    if (focusNext !== null) focusField(focusNext);
  }

  function post(form) {
    var idx = fields().indexOf(form.closest("section.field"));
    var data = new FormData(form);
    form.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
    fetch(form.action, {method: "POST", body: new URLSearchParams(data), credentials: "same-origin",
                        headers: {"X-Requested-With": "fetch"}})
      .then(function (resp) {
        if (resp.redirected && /\/login(\?|$)/.test(new URL(resp.url).pathname + "?")) {
          window.location = resp.url;  // the session expired: the login page says so
          return null;
        }
        return resp.text().then(function (html) {
          if (!resp.ok) {
            var m = new DOMParser().parseFromString(html, "text/html").querySelector(".message");
            say(m ? m.textContent : "refused (" + resp.status + ")", true);
            form.querySelectorAll("button").forEach(function (b) { b.disabled = false; });
            return;
          }
          replaceMain(html, idx >= 0 ? idx + 1 : null);
          say(form.id === "confirm-all" ? "fields confirmed as shown" : "field review recorded", false);
        });
      })
      .catch(function () {
        say("no answer from the device: the review was not recorded, try again", true);
        form.querySelectorAll("button").forEach(function (b) { b.disabled = false; });
      });
  }

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!window.fetch || !form.matches(".review-form, #confirm-all")) return;
    if (!document.getElementById("fields")) return;  // in place only on the sample page
    ev.preventDefault();
    post(form);
  });

  function typing(el) {
    return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT" || el.isContentEditable);
  }

  function follow(id) { var a = document.getElementById(id); if (a) window.location = a.href; return !!a; }

  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || typing(ev.target)) return;
    var k = ev.key, fs = fields(), f = fs[current];
    if (k === "n") return follow("next-sample") || follow("next-field");
    if (k === "p") return follow("prev-sample") || follow("prev-field");
    if (!document.getElementById("fields")) return;
    if (k === "j" || k === "ArrowRight" || k === "ArrowDown") { ev.preventDefault(); focusField(current + 1); }
    else if (k === "k" || k === "ArrowLeft" || k === "ArrowUp") { ev.preventDefault(); focusField(current - 1); }
    else if (/^[1-9]$/.test(k) && f) {
      var opt = f.querySelector('select[name=label] option[data-key="' + k + '"]');
      var form = f.querySelector("form.review-form");
      if (opt && form) { opt.selected = true; form.requestSubmit(); }
    } else if ((k === "c" || (k === "Enter" && ev.target === f)) && f) {
      var form2 = f.querySelector("form.review-form");
      if (form2) { ev.preventDefault(); form2.requestSubmit(); }
    } else if (k === "a") {
      var all = document.getElementById("confirm-all");
      if (all) all.requestSubmit();
    } else if (k === "s") {
      var r = document.querySelector("#signoff input[name=verdict]");
      if (r) { r.focus(); r.scrollIntoView({block: "center"}); }
    }
  });

  /* ---- the field page: zoom and pan the SVG by its viewBox ---- */
  function viewer() {
    var svg = document.getElementById("field-svg");
    if (!svg) return;
    var tools = document.getElementById("zoom-tools");
    if (tools) tools.hidden = false;
    var full = svg.viewBox.baseVal, W = full.width, H = full.height;
    var v = {x: 0, y: 0, w: W, h: H};
    function apply() {
      v.w = Math.min(W, Math.max(W / 32, v.w)); v.h = v.w * H / W;
      v.x = Math.min(Math.max(0, v.x), W - v.w); v.y = Math.min(Math.max(0, v.y), H - v.h);
      svg.setAttribute("viewBox", v.x + " " + v.y + " " + v.w + " " + v.h);
    }
    function zoom(f, cx, cy) {
      if (cx === undefined) { cx = v.x + v.w / 2; cy = v.y + v.h / 2; }
      var nw = v.w / f;
      v.x = cx - (cx - v.x) * nw / v.w; v.y = cy - (cy - v.y) * nw / v.w; v.w = nw; apply();
    }
    function point(ev) {
      var r = svg.getBoundingClientRect();
      return {x: v.x + (ev.clientX - r.left) / r.width * v.w, y: v.y + (ev.clientY - r.top) / r.height * v.h};
    }
    svg.addEventListener("wheel", function (ev) {
      ev.preventDefault(); var p = point(ev); zoom(ev.deltaY < 0 ? 1.25 : 0.8, p.x, p.y);
    }, {passive: false});
    var drag = null;
    svg.addEventListener("pointerdown", function (ev) { drag = {x: ev.clientX, y: ev.clientY}; svg.setPointerCapture(ev.pointerId); });
    svg.addEventListener("pointermove", function (ev) {
      if (!drag) return;
      var r = svg.getBoundingClientRect();
      v.x -= (ev.clientX - drag.x) / r.width * v.w; v.y -= (ev.clientY - drag.y) / r.height * v.h;
      drag = {x: ev.clientX, y: ev.clientY}; apply();
    });
    svg.addEventListener("pointerup", function () { drag = null; });
    if (tools) tools.addEventListener("click", function (ev) {
      var z = ev.target.getAttribute("data-zoom");
      if (z === "in") zoom(1.5); else if (z === "out") zoom(1 / 1.5);
      else if (z === "fit") { v = {x: 0, y: 0, w: W, h: H}; apply(); }
      else if (z === "1") { var r = svg.getBoundingClientRect(); zoom(v.w / (r.width || W)); }
    });
    document.addEventListener("keydown", function (ev) {
      if (typing(ev.target)) return;
      if (ev.key === "+" || ev.key === "=") zoom(1.5); else if (ev.key === "-") zoom(1 / 1.5);
      else if (ev.key === "0") { v = {x: 0, y: 0, w: W, h: H}; apply(); }
    });
  }

  document.addEventListener("DOMContentLoaded", viewer);
})();
