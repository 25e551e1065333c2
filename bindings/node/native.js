module.exports = require('./b3iq.linux-x64-gnu.node')
