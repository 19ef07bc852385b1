import { createApp } from 'vue';
import App from './App.vue';
import { router } from './router';
import { errorMessage } from './api';
import { reportProblem } from './problems';
import './style.css';

const app = createApp(App);
// Nothing escapes as an uncaught exception: a failure the page did not handle itself is
// shown in a banner instead.
app.config.errorHandler = (err) => reportProblem(errorMessage(err));
window.addEventListener('unhandledrejection', (ev) => {
  ev.preventDefault();
  reportProblem(errorMessage(ev.reason));
});
app.use(router);
app.mount('#app');
