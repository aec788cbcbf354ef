package io.github.lora4j.serve;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Some adapters a batch names could not be served, each for its own reason: not registered, a directory or file
 * missing, a corrupt file ({@link io.github.lora4j.io.AdapterFormatException}), an adapter that does not fit the
 * model, or one larger than the store's whole budget. The batch got no handle and holds nothing; every other adapter
 * and every other batch is untouched. A server answers the {@link #failedRows() failed rows} with their causes and
 * runs the others again as a new batch (the adapters that did load stay resident).
 */
public final class AdapterStoreException extends Exception {

    private static final long serialVersionUID = 1L;

    private final transient Map<String, Exception> failures;
    /** The indices of the rows that named a failed adapter, ascending. */
    private final int[] failedRows;

    AdapterStoreException(Map<String, Exception> failures, int[] failedRows, int distinctAdapters) {
        super(message(failures, failedRows, distinctAdapters), failures.values().iterator().next());
        this.failures = Collections.unmodifiableMap(new LinkedHashMap<>(failures));
        this.failedRows = failedRows.clone();
    }

    private static String message(Map<String, Exception> failures, int[] rows, int distinct) {
        StringBuilder sb = new StringBuilder().append(failures.size()).append(" of ").append(distinct)
                .append(" adapters of the batch could not be served (").append(rows.length)
                .append(rows.length == 1 ? " row" : " rows").append("); the batch holds nothing:");
        failures.forEach((name, cause) -> sb.append(System.lineSeparator()).append("  '").append(name).append("': ")
                .append(cause.getClass().getSimpleName()).append(": ").append(cause.getMessage()));
        return sb.toString();
    }

    /**
     * {@return adapter name → why it could not be served, in the order the batch first named them; unmodifiable}
     * The causes are {@link IllegalArgumentException} (not registered, does not fit the model, larger than the
     * budget), {@link io.github.lora4j.io.AdapterFormatException} (a corrupt or unsupported file),
     * {@link java.nio.file.NoSuchFileException} or another {@link java.io.IOException} (a file missing or unreadable),
     * {@link IllegalStateException} (the file changed between sizing and loading, or the model was changed behind the
     * store's back). Each message names the adapter and its directory.
     */
    public Map<String, Exception> failures() {
        return failures;
    }

    /** {@return the indices of the rows that named a failed adapter, ascending; a copy} */
    public int[] failedRows() {
        return failedRows.clone();
    }
}
