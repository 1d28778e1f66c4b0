/**
 * The dashboard's static files (apps/api/dashboard/). Resolved from a module one level below the app, because the
 * production bundle (apps/api/dist/main.js) sits at that depth too and inlines this module.
 */
export const DASHBOARD_ASSETS_DIR = new URL('../dashboard/', import.meta.url);
