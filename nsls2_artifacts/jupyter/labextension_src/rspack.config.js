// Module and chunk ids by order, not by path: the committed build is then the same
// whichever directory it is built in (a CI clone, a worktree), so CI can rebuild it from
// package-lock.json and compare (just labextension-check).
module.exports = { optimization: { moduleIds: 'natural', chunkIds: 'natural' } };
