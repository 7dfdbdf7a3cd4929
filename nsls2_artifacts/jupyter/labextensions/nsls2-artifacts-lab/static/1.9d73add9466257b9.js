"use strict";(self.rspackChunknsls2_artifacts_lab=self.rspackChunknsls2_artifacts_lab||[]).push([[1],{22(e,r,a){var o=a(23),n=a.n(o),t=a(24),i=a.n(t),s=a(25),c=a.n(s),l=new URL(a(26),a.b),p=i()(n()),d=c()(l);p.push([e.id,`/* NSLS-II launcher cards show the env logo as the card icon (one rule per logo URL is
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
  height: 46px;
  padding-top: 6px;
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
`,""]),a.d(r,{},{A:p})},24(e){e.exports=function(e){var r=[];return r.toString=function(){return this.map(function(r){var a="",o=void 0!==r[5];return r[4]&&(a+="@supports (".concat(r[4],") {")),r[2]&&(a+="@media ".concat(r[2]," {")),o&&(a+="@layer".concat(r[5].length>0?" ".concat(r[5]):""," {")),a+=e(r),o&&(a+="}"),r[2]&&(a+="}"),r[4]&&(a+="}"),a}).join("")},r.i=function(e,a,o,n,t){"string"==typeof e&&(e=[[null,e,void 0]]);var i={};if(o)for(var s=0;s<this.length;s++){var c=this[s][0];null!=c&&(i[c]=!0)}for(var l=0;l<e.length;l++){var p=[].concat(e[l]);o&&i[p[0]]||(void 0!==t&&(void 0===p[5]||(p[1]="@layer".concat(p[5].length>0?" ".concat(p[5]):""," {").concat(p[1],"}")),p[5]=t),a&&(p[2]&&(p[1]="@media ".concat(p[2]," {").concat(p[1],"}")),p[2]=a),n&&(p[4]?(p[1]="@supports (".concat(p[4],") {").concat(p[1],"}"),p[4]=n):p[4]="".concat(n)),r.push(p))}},r}},25(e){e.exports=function(e,r){return(r||(r={}),e&&(e=String(e.__esModule?e.default:e),/^['"].*['"]$/.test(e)&&(e=e.slice(1,-1)),r.hash&&(e+=r.hash),/["'() \t\n]|(%20)/.test(e)||r.needQuotes))?'"'.concat(e.replace(/"/g,'\\"').replace(/\n/g,"\\n"),'"'):e}},23(e){e.exports=function(e){return e[1]}},15(e,r,a){a.r(r);var o=a(16),n=a.n(o),t=a(17),i=a.n(t),s=a(18),c=a.n(s),l=a(19),p=a.n(l),d=a(20),u=a.n(d),h=a(21),f=a.n(h),g=a(22),b={};b.styleTagTransform=f(),b.setAttributes=p(),b.insert=c().bind(null,"head"),b.domAPI=i(),b.insertStyleElement=u(),n()(g.A,b);let v=g.A&&g.A.locals?g.A.locals:void 0;a.d(r,{},{default:v})},16(e){var r=[];function a(e){for(var a=-1,o=0;o<r.length;o++)if(r[o].identifier===e){a=o;break}return a}function o(e,o){for(var n={},t=[],i=0;i<e.length;i++){var s=e[i],c=o.base?s[0]+o.base:s[0],l=n[c]||0,p="".concat(c," ").concat(l);n[c]=l+1;var d=a(p),u={css:s[1],media:s[2],sourceMap:s[3],supports:s[4],layer:s[5]};if(-1!==d)r[d].references++,r[d].updater(u);else{var h=function(e,r){var a=r.domAPI(r);return a.update(e),function(r){r?(r.css!==e.css||r.media!==e.media||r.sourceMap!==e.sourceMap||r.supports!==e.supports||r.layer!==e.layer)&&a.update(e=r):a.remove()}}(u,o);o.byIndex=i,r.splice(i,0,{identifier:p,updater:h,references:1})}t.push(p)}return t}e.exports=function(e,n){var t=o(e=e||[],n=n||{});return function(e){e=e||[];for(var i=0;i<t.length;i++){var s=a(t[i]);r[s].references--}for(var c=o(e,n),l=0;l<t.length;l++){var p=a(t[l]);0===r[p].references&&(r[p].updater(),r.splice(p,1))}t=c}}},18(e){var r={};e.exports=function(e,a){var o=function(e){if(void 0===r[e]){var a=document.querySelector(e);if(window.HTMLIFrameElement&&a instanceof window.HTMLIFrameElement)try{a=a.contentDocument.head}catch(e){a=null}r[e]=a}return r[e]}(e);if(!o)throw Error("Couldn't find a style target. This probably means that the value for the 'insert' parameter is invalid.");o.appendChild(a)}},20(e){e.exports=function(e){var r=document.createElement("style");return e.setAttributes(r,e.attributes),e.insert(r,e.options),r}},19(e,r,a){e.exports=function(e){var r=a.nc;r&&e.setAttribute("nonce",r)}},17(e){e.exports=function(e){if("u"<typeof document)return{update:function(){},remove:function(){}};var r=e.insertStyleElement(e);return{update:function(a){var o,n,t;o="",a.supports&&(o+="@supports (".concat(a.supports,") {")),a.media&&(o+="@media ".concat(a.media," {")),(n=void 0!==a.layer)&&(o+="@layer".concat(a.layer.length>0?" ".concat(a.layer):""," {")),o+=a.css,n&&(o+="}"),a.media&&(o+="}"),a.supports&&(o+="}"),(t=a.sourceMap)&&"u">typeof btoa&&(o+="\n/*# sourceMappingURL=data:application/json;base64,".concat(btoa(unescape(encodeURIComponent(JSON.stringify(t))))," */")),e.styleTagTransform(o,r,e.options)},remove:function(){var e;null===(e=r).parentNode||e.parentNode.removeChild(e)}}}},21(e){e.exports=function(e,r){if(r.styleSheet)r.styleSheet.cssText=e;else{for(;r.firstChild;)r.removeChild(r.firstChild);r.appendChild(document.createTextNode(e))}}},26(e){e.exports="data:image/svg+xml,%3Csvg xmlns=%27http://www.w3.org/2000/svg%27 viewBox=%270 0 64 64%27%3E%3Ccircle cx=%2732%27 cy=%2732%27 r=%2726%27 fill=%27none%27 stroke=%27%23003e7e%27 stroke-width=%276%27/%3E%3Cpath d=%27M32 6 A26 26 0 0 1 58 32%27 fill=%27none%27 stroke=%27%23f7a600%27 stroke-width=%276%27/%3E%3Ctext x=%2732%27 y=%2737%27 text-anchor=%27middle%27 font-family=%27sans-serif%27 font-weight=%27bold%27 font-size=%2713%27 fill=%27%23003e7e%27%3EII%3C/text%3E%3C/svg%3E"}}]);