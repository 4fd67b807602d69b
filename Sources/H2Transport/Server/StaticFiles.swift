import Foundation
import NIOCore

/// The dashboard's files, read once from the module's resources at start.
struct StaticFiles: Sendable {
    struct File: Sendable {
        var contentType: String
        var body: ByteBuffer
    }

    let files: [String: File]

    static func load() -> StaticFiles {
        var files: [String: File] = [:]
        guard let dir = Bundle.module.url(forResource: "public", withExtension: nil) else { return StaticFiles(files: [:]) }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        for name in names {
            guard let data = FileManager.default.contents(atPath: dir.appendingPathComponent(name).path) else { continue }
            let type: String
            switch (name as NSString).pathExtension {
            case "html": type = "text/html; charset=utf-8"
            case "js": type = "text/javascript; charset=utf-8"
            case "css": type = "text/css; charset=utf-8"
            case "svg": type = "image/svg+xml"
            default: type = "application/octet-stream"
            }
            files["/" + name] = File(contentType: type, body: ByteBuffer(bytes: data))
        }
        if let index = files["/index.html"] { files["/"] = index }
        return StaticFiles(files: files)
    }
}
