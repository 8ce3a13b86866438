// The printable page's one button: the browser's print dialog.
"use strict";
document.getElementById("print")?.addEventListener("click", () => window.print());
