// cascade ui: live refresh of the status matrix (one batched read per poll), the partition detail
// panel with copy buttons, and the side panels. Plain JavaScript, no build step.
(function () {
  "use strict";
  const body = document.body;
  const start = body.dataset.start, end = body.dataset.end;
  const refreshMs = Number(body.dataset.refreshMs) || 5000;
  const glyphs = JSON.parse(body.dataset.glyphs || "{}");
  const state = document.getElementById("refresh-state");
  const detail = document.getElementById("detail");
  const detailBody = document.getElementById("detail-body");
  const range = "start=" + encodeURIComponent(start) + "&end=" + encodeURIComponent(end);
  let openKey = null;

  const cells = new Map();
  document.querySelectorAll("#matrix td[data-key]").forEach(function (td) { cells.set(td.dataset.key + (td.classList.contains("roll") ? "#phase" : ""), td); });

  function setCell(td, status) {
    if (td.dataset.status === status) return false;
    td.classList.remove("s-" + td.dataset.status, "nogame");
    td.classList.add("s-" + status);
    const nogame = td.dataset.nogame === "1" && (status === "missing" || status === "skipped");
    if (nogame) td.classList.add("nogame");
    td.dataset.status = status;
    td.textContent = nogame ? "" : (glyphs[status] !== undefined ? glyphs[status] : "?");
    const [proc, day] = td.dataset.key.split("|");
    td.title = proc + " " + day + ": " + status + " (click for details)";
    return true;
  }

  function setRoll(td, st) {
    if (td.dataset.state === st) return;
    td.classList.remove("r-" + td.dataset.state, "nogame");
    td.classList.add("r-" + st);
    if (td.dataset.nogame === "1" && (st === "missing" || st === "skipped")) td.classList.add("nogame");
    td.dataset.state = st;
    td.title = "phase " + td.dataset.key.replace("|", " ") + ": " + (st === "triggered-not-started" ?
      "triggered, not started (the phase before it triggered it; no run began since: cascade sweep re-publishes it)" : st);
  }

  async function poll() {
    try {
      const resp = await fetch("/api/matrix?" + range, { cache: "no-store" });
      const data = await resp.json();
      if (!resp.ok) throw new Error(data.error || resp.statusText);
      let changedOpen = false;
      for (const [key, status] of Object.entries(data.cells)) {
        const td = cells.get(key);
        if (td && setCell(td, status) && key === openKey) changedOpen = true;
      }
      for (const [key, st] of Object.entries(data.phases)) {
        const td = cells.get(key + "#phase");
        if (td) setRoll(td, st);
      }
      document.querySelectorAll("[id^=count-]").forEach(function (el) {
        el.textContent = data.counts[el.id.slice(6)] || 0;
      });
      state.dataset.ok = "1";
      state.textContent = "live: read " + new Date().toLocaleTimeString() + " (every " + refreshMs / 1000 + " s)";
      if (changedOpen) openDetail(openKey);
    } catch (err) {
      state.dataset.ok = "0";
      state.textContent = "refresh failed: " + err.message + " (retrying)";
    } finally {
      setTimeout(poll, refreshMs);
    }
  }

  async function openDetail(key) {
    const [proc, day] = key.split("|");
    const prev = openKey && cells.get(openKey);
    if (prev) prev.classList.remove("selected");
    openKey = key;
    const td = cells.get(key);
    if (td) td.classList.add("selected");
    detail.hidden = false;
    try {
      const resp = await fetch("/partition?processor=" + encodeURIComponent(proc) + "&date=" + encodeURIComponent(day), { cache: "no-store" });
      detailBody.innerHTML = await resp.text();
    } catch (err) {
      detailBody.innerHTML = "";
      const box = document.createElement("div");
      box.className = "error-box";
      box.textContent = "could not read " + key + ": " + err.message;
      detailBody.appendChild(box);
    }
  }

  function closeDetail() {
    const td = openKey && cells.get(openKey);
    if (td) td.classList.remove("selected");
    openKey = null;
    detail.hidden = true;
  }

  function copy(button) {
    const text = button.dataset.copy;
    const label = button.dataset.label || (button.dataset.label = button.textContent);
    const done = function () { button.textContent = "copied"; setTimeout(function () { button.textContent = label; }, 1500); };
    const fallback = function () {
      const area = document.createElement("textarea");
      area.value = text;
      document.body.appendChild(area);
      area.select();
      try { document.execCommand("copy"); } finally { area.remove(); }
      done();
    };
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done, fallback);
    else fallback();
  }

  async function loadPanels() {
    const el = document.getElementById("panels");
    try {
      const resp = await fetch("/panels?" + range, { cache: "no-store" });
      el.innerHTML = await resp.text();
    } catch (err) {
      el.textContent = "could not read the panels: " + err.message;
    } finally {
      setTimeout(loadPanels, Math.max(refreshMs * 2, 10000));
    }
  }

  document.getElementById("matrix").addEventListener("click", function (ev) {
    const td = ev.target.closest("td.cell");
    if (td) openDetail(td.dataset.key);
  });
  detail.addEventListener("click", function (ev) {
    const b = ev.target.closest("button.copy");
    if (b) copy(b);
  });
  document.getElementById("detail-close").addEventListener("click", closeDetail);
  document.addEventListener("keydown", function (ev) { if (ev.key === "Escape") closeDetail(); });

  setTimeout(poll, refreshMs);
  loadPanels();
})();
