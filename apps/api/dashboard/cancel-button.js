// The build page's Cancel button (build.html loads this before app.js): POST /api/builds/<id>/cancel with the
// session cookie; the server decides whether this caller may, and refuses posts from other sites.
'use strict';

/** Queued and running builds can be cancelled; an ended one hides the button. */
function showCancelButton(state) {
  document.querySelector('#cancel').hidden = state === 'done_success' || state === 'done_failure';
}

/** Wires the button of build `id`; `refresh` re-reads the build once the server answered. */
function wireCancelButton(id, refresh) {
  const cancel = document.querySelector('#cancel');
  const problem = document.querySelector('#cancel-error');
  cancel.addEventListener('click', async () => {
    if (!confirm(`Cancel build ${id}? Everyone waiting for it gets a failure.`)) return;
    cancel.disabled = true;
    problem.hidden = true;
    const res = await fetch(`/api/builds/${encodeURIComponent(id)}/cancel`, { method: 'POST', credentials: 'same-origin' }).catch((err) => ({ ok: false, json: async () => ({ error: err.message }) }));
    if (!res.ok) {
      problem.textContent = `Not cancelled: ${(await res.json().catch(() => ({}))).error || `HTTP ${res.status}`}`;
      problem.hidden = false;
      cancel.disabled = false;
    }
    refresh();
  });
}
