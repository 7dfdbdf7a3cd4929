"use strict";(self.rspackChunknsls2_artifacts_lab=self.rspackChunknsls2_artifacts_lab||[]).push([[1],{22(e,r,o){var a=o(23),n=o.n(a),t=o(24),i=o.n(t),s=o(25),l=o.n(s),p=new URL(o(26),o.b),c=i()(n()),d=l()(p);c.push([e.id,`/* NSLS-II launcher cards show the env logo as the card icon (one rule per logo URL is
   added at run time); the build indicator is marked when a newer build is deployed. */
.jp-nsls2-logo {
  background-size: contain;
  background-repeat: no-repeat;
  background-position: center;
  min-width: 52px;
  min-height: 52px;
}

.jp-nsls2-nologo {
  background-color: var(--jp-brand-color1);
  border-radius: 6px;
}

.jp-nsls2-build {
  padding: 0 6px;
  line-height: var(--jp-statusbar-height, 24px);
}

.jp-nsls2-build-newer {
  color: var(--jp-warn-color0);
  font-weight: bold;
}

.jp-nsls2-retired select {
  width: 100%;
  margin-top: 6px;
}

/* The NSLS-II section headers carry their own mark, not the first card's env logo. */
.jp-Launcher-sectionHeader .jp-nsls2-env-card,
.jp-Launcher-sectionHeader .jp-nsls2-beamline-card {
  background-image: url(${d}) !important;
  background-color: transparent;
  min-width: 28px;
  min-height: 28px;
}

/* One card per env: wide enough that "NSLS-II HAXPES" and a date never wrap mid-word. */
.jp-LauncherCard[data-category='NSLS-II'],
.jp-LauncherCard[data-category='NSLS-II beamlines'] {
  width: 11em;
}

.jp-LauncherCard[data-category='NSLS-II'] .jp-LauncherCard-label p,
.jp-LauncherCard[data-category='NSLS-II beamlines'] .jp-LauncherCard-label p {
  min-height: 0;
  margin: 0;
  white-space: nowrap;
  text-overflow: ellipsis;
  overflow: hidden;
  font-weight: 600;
}

.jp-nsls2-card-tracks {
  display: flex;
  flex-direction: column;
  align-items: center;
  gap: 3px;
  padding: 0 4px 6px;
  font-size: var(--jp-ui-font-size0);
  color: var(--jp-ui-font-color2);
  white-space: nowrap;
}

.jp-nsls2-card-line {
  display: flex;
  gap: 4px;
  align-items: center;
  flex-wrap: nowrap;
}

.jp-nsls2-badge {
  display: inline-block;
  padding: 0 5px;
  border-radius: 8px;
  font-size: var(--jp-ui-font-size0);
  line-height: 16px;
  white-space: nowrap;
  border: 1px solid transparent;
}

.jp-nsls2-badge-latest {
  background: var(--jp-brand-color3, #c3e2fc);
  color: var(--jp-brand-color0, #0d47a1);
}

/* LTS is a fixed, supported build: a different colour from the rolling "latest" */
.jp-nsls2-badge-lts {
  background: var(--jp-warn-color3, #ffe0b2);
  color: var(--jp-warn-color0, #bf360c);
  border-color: var(--jp-warn-color2, #ffb74d);
}

button.jp-nsls2-card-lts {
  cursor: pointer;
  font-family: inherit;
}

button.jp-nsls2-card-lts:hover {
  border-color: var(--jp-warn-color0, #bf360c);
}

.jp-nsls2-badge-recommended {
  background: var(--jp-success-color3, #c8e6c9);
  color: var(--jp-success-color0, #1b5e20);
}

.jp-nsls2-badge-current {
  background: var(--jp-layout-color3, #bdbdbd);
  color: var(--jp-ui-font-color0);
}

.jp-nsls2-badge-unlisted {
  background: var(--jp-layout-color2, #eee);
  color: var(--jp-ui-font-color2);
}

.jp-nsls2-launcher-filter {
  margin-left: auto;
  width: 22em;
  padding: 3px 6px;
  font-size: var(--jp-ui-font-size1);
  border: 1px solid var(--jp-border-color1);
  border-radius: var(--jp-border-radius);
  background: var(--jp-layout-color0);
  color: var(--jp-ui-font-color0);
}

/* The kernel dialog: a search box and a short list (envs, older builds folded). */
.jp-nsls2-picker {
  width: 34em;
  max-width: 80vw;
}

.jp-nsls2-picker-search {
  width: 100%;
  box-sizing: border-box;
  padding: 4px 6px;
  margin-bottom: 6px;
  font-size: var(--jp-ui-font-size1);
}

.jp-nsls2-picker-list {
  list-style: none;
  margin: 0;
  padding: 0;
  max-height: 60vh;
  overflow-y: auto;
  border: 1px solid var(--jp-border-color2);
}

.jp-nsls2-picker-entry {
  display: flex;
  flex-wrap: wrap;
  align-items: center;
  gap: 0 6px;
  padding: 3px 8px 3px 5px;
  cursor: pointer;
  border-bottom: 1px solid var(--jp-border-color3);
  border-left: 3px solid transparent;
}

.jp-nsls2-picker-entry.jp-mod-selected {
  background: var(--jp-layout-color2, #eee);
  border-left-color: var(--jp-brand-color1, #1976d2);
}

.jp-nsls2-picker-older {
  padding-left: 28px;
}

.jp-nsls2-picker-title {
  font-weight: 600;
  white-space: nowrap;
}

.jp-nsls2-picker-detail {
  flex-basis: 100%;
  color: var(--jp-ui-font-color2);
  font-size: var(--jp-ui-font-size0);
  white-space: nowrap;
}

button.jp-nsls2-picker-toggle {
  margin-left: auto;
  font-size: var(--jp-ui-font-size0);
  padding: 0 6px;
  height: 18px;
  line-height: 16px;
  background: transparent;
  color: var(--jp-brand-color1, #1976d2);
  border: 1px solid var(--jp-border-color2);
}

.jp-nsls2-picker-more {
  color: var(--jp-brand-color1);
  font-style: italic;
}

.jp-nsls2-picker-message {
  margin: 0 0 8px;
}

.jp-nsls2-picker-toggle {
  order: 1;
}

.jp-nsls2-picker-detail {
  order: 2;
}

/* NSLS-II cards: a smaller icon, so 30 envs take a few rows, not pages */
.jp-LauncherCard[data-category='NSLS-II'] .jp-LauncherCard-icon,
.jp-LauncherCard[data-category='NSLS-II beamlines'] .jp-LauncherCard-icon {
  height: 62px;
  padding-top: 4px;
}

.jp-LauncherCard[data-category='NSLS-II'] .jp-nsls2-logo,
.jp-LauncherCard[data-category='NSLS-II beamlines'] .jp-nsls2-logo {
  min-width: 38px;
  min-height: 38px;
}

.jp-LauncherCard[data-category='NSLS-II'],
.jp-LauncherCard[data-category='NSLS-II beamlines'] {
  min-height: 0;
}

/* cards the filter box hides (the stock card's display: flex would win over [hidden]) */
.jp-LauncherCard[hidden] {
  display: none !important;
}

/* the notebook toolbar's compact kernel name (it replaces the stock one at the far right) */
.jp-nsls2-has-kernel-name .jp-NotebookPanel-toolbar .jp-KernelName {
  display: none;
}

button.jp-nsls2-kernel-name {
  max-width: 14em;
  overflow: hidden;
  text-overflow: ellipsis;
  white-space: nowrap;
  margin: 0 4px;
  padding: 0 6px;
  height: 22px;
  font-size: var(--jp-ui-font-size1);
  color: var(--jp-ui-font-color1);
  background: var(--jp-layout-color2);
  border: 1px solid var(--jp-border-color2);
  border-radius: var(--jp-border-radius);
  cursor: pointer;
}
`,""]),o.d(r,{},{A:c})},24(e){e.exports=function(e){var r=[];return r.toString=function(){return this.map(function(r){var o="",a=void 0!==r[5];return r[4]&&(o+="@supports (".concat(r[4],") {")),r[2]&&(o+="@media ".concat(r[2]," {")),a&&(o+="@layer".concat(r[5].length>0?" ".concat(r[5]):""," {")),o+=e(r),a&&(o+="}"),r[2]&&(o+="}"),r[4]&&(o+="}"),o}).join("")},r.i=function(e,o,a,n,t){"string"==typeof e&&(e=[[null,e,void 0]]);var i={};if(a)for(var s=0;s<this.length;s++){var l=this[s][0];null!=l&&(i[l]=!0)}for(var p=0;p<e.length;p++){var c=[].concat(e[p]);a&&i[c[0]]||(void 0!==t&&(void 0===c[5]||(c[1]="@layer".concat(c[5].length>0?" ".concat(c[5]):""," {").concat(c[1],"}")),c[5]=t),o&&(c[2]&&(c[1]="@media ".concat(c[2]," {").concat(c[1],"}")),c[2]=o),n&&(c[4]?(c[1]="@supports (".concat(c[4],") {").concat(c[1],"}"),c[4]=n):c[4]="".concat(n)),r.push(c))}},r}},25(e){e.exports=function(e,r){return(r||(r={}),e&&(e=String(e.__esModule?e.default:e),/^['"].*['"]$/.test(e)&&(e=e.slice(1,-1)),r.hash&&(e+=r.hash),/["'() \t\n]|(%20)/.test(e)||r.needQuotes))?'"'.concat(e.replace(/"/g,'\\"').replace(/\n/g,"\\n"),'"'):e}},23(e){e.exports=function(e){return e[1]}},15(e,r,o){o.r(r);var a=o(16),n=o.n(a),t=o(17),i=o.n(t),s=o(18),l=o.n(s),p=o(19),c=o.n(p),d=o(20),u=o.n(d),h=o(21),f=o.n(h),g=o(22),b={};b.styleTagTransform=f(),b.setAttributes=c(),b.insert=l().bind(null,"head"),b.domAPI=i(),b.insertStyleElement=u(),n()(g.A,b);let v=g.A&&g.A.locals?g.A.locals:void 0;o.d(r,{},{default:v})},16(e){var r=[];function o(e){for(var o=-1,a=0;a<r.length;a++)if(r[a].identifier===e){o=a;break}return o}function a(e,a){for(var n={},t=[],i=0;i<e.length;i++){var s=e[i],l=a.base?s[0]+a.base:s[0],p=n[l]||0,c="".concat(l," ").concat(p);n[l]=p+1;var d=o(c),u={css:s[1],media:s[2],sourceMap:s[3],supports:s[4],layer:s[5]};if(-1!==d)r[d].references++,r[d].updater(u);else{var h=function(e,r){var o=r.domAPI(r);return o.update(e),function(r){r?(r.css!==e.css||r.media!==e.media||r.sourceMap!==e.sourceMap||r.supports!==e.supports||r.layer!==e.layer)&&o.update(e=r):o.remove()}}(u,a);a.byIndex=i,r.splice(i,0,{identifier:c,updater:h,references:1})}t.push(c)}return t}e.exports=function(e,n){var t=a(e=e||[],n=n||{});return function(e){e=e||[];for(var i=0;i<t.length;i++){var s=o(t[i]);r[s].references--}for(var l=a(e,n),p=0;p<t.length;p++){var c=o(t[p]);0===r[c].references&&(r[c].updater(),r.splice(c,1))}t=l}}},18(e){var r={};e.exports=function(e,o){var a=function(e){if(void 0===r[e]){var o=document.querySelector(e);if(window.HTMLIFrameElement&&o instanceof window.HTMLIFrameElement)try{o=o.contentDocument.head}catch(e){o=null}r[e]=o}return r[e]}(e);if(!a)throw Error("Couldn't find a style target. This probably means that the value for the 'insert' parameter is invalid.");a.appendChild(o)}},20(e){e.exports=function(e){var r=document.createElement("style");return e.setAttributes(r,e.attributes),e.insert(r,e.options),r}},19(e,r,o){e.exports=function(e){var r=o.nc;r&&e.setAttribute("nonce",r)}},17(e){e.exports=function(e){if("u"<typeof document)return{update:function(){},remove:function(){}};var r=e.insertStyleElement(e);return{update:function(o){var a,n,t;a="",o.supports&&(a+="@supports (".concat(o.supports,") {")),o.media&&(a+="@media ".concat(o.media," {")),(n=void 0!==o.layer)&&(a+="@layer".concat(o.layer.length>0?" ".concat(o.layer):""," {")),a+=o.css,n&&(a+="}"),o.media&&(a+="}"),o.supports&&(a+="}"),(t=o.sourceMap)&&"u">typeof btoa&&(a+="\n/*# sourceMappingURL=data:application/json;base64,".concat(btoa(unescape(encodeURIComponent(JSON.stringify(t))))," */")),e.styleTagTransform(a,r,e.options)},remove:function(){var e;null===(e=r).parentNode||e.parentNode.removeChild(e)}}}},21(e){e.exports=function(e,r){if(r.styleSheet)r.styleSheet.cssText=e;else{for(;r.firstChild;)r.removeChild(r.firstChild);r.appendChild(document.createTextNode(e))}}},26(e){e.exports="data:image/svg+xml,%3Csvg xmlns=%27http://www.w3.org/2000/svg%27 viewBox=%270 0 64 64%27%3E%3Ccircle cx=%2732%27 cy=%2732%27 r=%2726%27 fill=%27none%27 stroke=%27%23003e7e%27 stroke-width=%276%27/%3E%3Cpath d=%27M32 6 A26 26 0 0 1 58 32%27 fill=%27none%27 stroke=%27%23f7a600%27 stroke-width=%276%27/%3E%3Ctext x=%2732%27 y=%2737%27 text-anchor=%27middle%27 font-family=%27sans-serif%27 font-weight=%27bold%27 font-size=%2713%27 fill=%27%23003e7e%27%3EII%3C/text%3E%3C/svg%3E"}}]);