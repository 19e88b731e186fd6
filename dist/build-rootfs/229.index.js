export const id = 229;
export const ids = [229];
export const modules = {

/***/ 1229:
/***/ ((__unused_webpack_module, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   isStaticElf: () => (/* binding */ isStaticElf)
/* harmony export */ });
/* harmony import */ var node_fs_promises__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(51455);
/* harmony import */ var node_fs_promises__WEBPACK_IMPORTED_MODULE_0___default = /*#__PURE__*/__webpack_require__.n(node_fs_promises__WEBPACK_IMPORTED_MODULE_0__);

/** True when `file` is an ELF executable with no program interpreter (statically linked). */
async function isStaticElf(file) {
    const fh = await node_fs_promises__WEBPACK_IMPORTED_MODULE_0__.open(file, 'r');
    try {
        const hdr = Buffer.alloc(64);
        await fh.read(hdr, 0, 64, 0);
        if (hdr.readUInt32BE(0) !== 0x7f454c46)
            return false;
        const is64 = hdr[4] === 2;
        const le = hdr[5] === 1;
        const u16 = (b, o) => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
        const u32 = (b, o) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
        const phoff = is64 ? Number(le ? hdr.readBigUInt64LE(32) : hdr.readBigUInt64BE(32)) : u32(hdr, 28);
        const phentsize = u16(hdr, is64 ? 54 : 42);
        const phnum = u16(hdr, is64 ? 56 : 44);
        const ph = Buffer.alloc(phentsize * phnum);
        await fh.read(ph, 0, ph.length, phoff);
        for (let i = 0; i < phnum; i++) {
            if (u32(ph, i * phentsize) === 3 /* PT_INTERP */)
                return false;
        }
        return true;
    }
    finally {
        await fh.close();
    }
}


/***/ })

};
