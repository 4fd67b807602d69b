import Foundation

/// A self-signed certificate for development, made with the `openssl` command at start.
///
/// Only for `--tls-self-signed`; production deployments pass `--tls-cert`/`--tls-key`.
public enum DevelopmentCertificate {
    /// Errors while generating.
    public struct Failure: Error, CustomStringConvertible {
        /// What went wrong.
        public var description: String
    }

    /// Writes `cert.pem` and `key.pem` (EC P-256, valid 30 days, for localhost and 127.0.0.1)
    /// into `directory` and returns their paths.
    public static func generate(in directory: String) throws -> HTTPServerConfiguration.TLSFiles {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let cert = directory + "/cert.pem", key = directory + "/key.pem"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                       "-nodes", "-days", "30", "-subj", "/CN=localhost", "-keyout", key, "-out", cert,
                       "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { throw Failure(description: "cannot run openssl: \(error)") }
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw Failure(description: "openssl req failed with status \(p.terminationStatus)") }
        chmod(key, 0o600)
        return HTTPServerConfiguration.TLSFiles(certificatePath: cert, keyPath: key)
    }
}
