package io.github.lora4j.io;

import java.io.IOException;

/**
 * An adapter file that lora4j refuses to read: truncated, corrupt, hostile (sizes or offsets that do not match
 * the file), or valid but unsupported (an unknown data type, a PEFT feature lora4j cannot reproduce). The message
 * names the file part, what was expected and what was found. Whoever catches it may rely on nothing having been
 * changed: no model was modified and no existing file was replaced.
 */
public final class AdapterFormatException extends IOException {

    private static final long serialVersionUID = 1L;

    /**
     * An exception with a message naming expected vs actual.
     *
     * @param message what was expected and what was found, naming the file part; returned by {@link #getMessage()}
     */
    public AdapterFormatException(String message) {
        super(message);
    }

    /**
     * An exception with a message naming expected vs actual, caused by a lower-level parse error.
     *
     * @param message what was expected and what was found, naming the file part; returned by {@link #getMessage()}
     * @param cause   the lower-level parse error (e.g. a JSON or I/O exception); may be {@code null}
     */
    public AdapterFormatException(String message, Throwable cause) {
        super(message, cause);
    }
}
