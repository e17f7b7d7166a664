// Placeholder: the dashboard page (issue 15) replaces this file.
"use strict";
document.getElementById("app").textContent = "livehead dashboard (placeholder page)";
