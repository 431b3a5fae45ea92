// Swagger UI over the live document of this deployment. Try-it-out calls go
// to the same origin (the document names no servers). An access token typed
// into "Authorize" stays in this page's memory (persistAuthorization off):
// not in any storage, never in a URL.
'use strict';
window.ui = SwaggerUIBundle({
  url: '/openapi.json',
  dom_id: '#swagger-ui',
  deepLinking: true,
  persistAuthorization: false,
  tryItOutEnabled: false,
  displayRequestDuration: true,
  defaultModelsExpandDepth: 0,
  validatorUrl: null,
});
