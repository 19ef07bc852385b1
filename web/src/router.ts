import { createRouter, createWebHistory } from 'vue-router';
import Dashboard from './pages/Dashboard.vue';
import Users from './pages/Users.vue';
import Keys from './pages/Keys.vue';
import Providers from './pages/Providers.vue';
import Usage from './pages/Usage.vue';
import Audit from './pages/Audit.vue';
import Logs from './pages/Logs.vue';
import Jobs from './pages/Jobs.vue';
import Mcp from './pages/Mcp.vue';
import Approvals from './pages/Approvals.vue';
import Agents from './pages/Agents.vue';
import Scripts from './pages/Scripts.vue';
import Playground from './pages/Playground.vue';

/** The pages, in the order of the navigation. */
export const pages = [
  { path: '/dashboard', title: 'Dashboard', component: Dashboard },
  { path: '/users', title: 'Users & teams', component: Users },
  { path: '/keys', title: 'Keys', component: Keys },
  { path: '/providers', title: 'Providers & models', component: Providers },
  { path: '/logs', title: 'Request log', component: Logs },
  { path: '/usage', title: 'Usage & cost', component: Usage },
  { path: '/audit', title: 'Audit log', component: Audit },
  { path: '/jobs', title: 'Jobs', component: Jobs },
  { path: '/mcp', title: 'MCP', component: Mcp },
  { path: '/approvals', title: 'Approvals', component: Approvals },
  { path: '/agents', title: 'Agents & tasks', component: Agents },
  { path: '/scripts', title: 'Scripts', component: Scripts },
  { path: '/playground', title: 'Playground', component: Playground },
];

export const router = createRouter({
  // lowart serves the console at /ui (and index.html for every client-side path)
  history: createWebHistory('/ui/'),
  routes: [
    { path: '/', redirect: '/dashboard' },
    ...pages.map((p) => ({ path: p.path, component: p.component, meta: { title: p.title } })),
    { path: '/:rest(.*)*', redirect: '/dashboard' },
  ],
});

router.afterEach((to) => {
  const title = typeof to.meta.title === 'string' ? to.meta.title : '';
  document.title = title ? `${title} · lowart` : 'lowart console';
});
