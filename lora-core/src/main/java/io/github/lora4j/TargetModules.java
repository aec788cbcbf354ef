package io.github.lora4j;

import java.util.Collection;
import java.util.Objects;
import java.util.regex.Pattern;

/**
 * Which modules a LoRA configuration targets: PEFT's {@code target_modules} rule, the one rule of lora4j's hosts
 * ({@code LoraModel}, lora-dl4j's {@code LoraDl4j} and {@code LoraSameDiff}).
 *
 * <p>PEFT ({@code check_target_module_exists}) reads {@code target_modules} two ways:
 * <ul>
 *   <li>a <b>list of names</b>: a module path matches a name when it equals it or ends with {@code "." + name}, so
 *       {@code "q_proj"} matches {@code "model.layers.0.self_attn.q_proj"} but not {@code "model.xq_proj"}, and a
 *       name may hold dots itself ({@code "self_attn.q_proj"}); a prefix is no match;</li>
 *   <li>one <b>regex string</b>: it must match the whole path ({@code re.fullmatch}), as {@link Pattern#matcher}'s
 *       {@code matches()} does.</li>
 * </ul>
 * A host whose paths use another scope separator beside the dot (SameDiff's {@code '/'}) passes it to
 * {@link #nameMatches(String, String, char...)}; everything else is the same rule.
 *
 * <p>The methods are pure functions of their arguments, safe on any thread.
 */
public final class TargetModules {

    private TargetModules() {
    }

    /**
     * PEFT's rule for one target name, with the dot as the only separator.
     *
     * @param path a module path, e.g. {@code "model.layers.0.self_attn.q_proj"}; not {@code null}
     * @param name a target name, e.g. {@code "q_proj"}; not {@code null}
     * @return whether {@code path} equals {@code name} or ends with {@code "." + name}
     * @throws NullPointerException if an argument is {@code null}
     */
    public static boolean nameMatches(String path, String name) {
        return nameMatches(path, name, '.');
    }

    /**
     * PEFT's rule for one target name, with the given scope separators.
     *
     * @param path       a module path; not {@code null}
     * @param name       a target name; not {@code null}
     * @param separators the characters that may precede {@code name} at the end of {@code path} (PEFT: {@code '.'})
     * @return whether {@code path} equals {@code name} or ends with one of the separators followed by {@code name}
     * @throws NullPointerException if an argument is {@code null}
     */
    public static boolean nameMatches(String path, String name, char... separators) {
        Objects.requireNonNull(path, "path must not be null");
        Objects.requireNonNull(name, "name must not be null");
        if (path.equals(name)) {
            return true;
        }
        int at = path.length() - name.length() - 1;
        if (at < 0 || !path.endsWith(name)) {
            return false;
        }
        char before = path.charAt(at);
        for (char s : separators) {
            if (before == s) {
                return true;
            }
        }
        return false;
    }

    /**
     * PEFT's rule for a list of target names: whether any of them matches (dot separator).
     *
     * @param path  a module path; not {@code null}
     * @param names the target names; not {@code null}, no {@code null} element
     * @return whether {@link #nameMatches(String, String)} holds for one of {@code names}
     * @throws NullPointerException if an argument or a name is {@code null}
     */
    public static boolean anyNameMatches(String path, Collection<String> names) {
        return anyNameMatches(path, names, '.');
    }

    /**
     * PEFT's rule for a list of target names with the given scope separators.
     *
     * @param path       a module path; not {@code null}
     * @param names      the target names; not {@code null}, no {@code null} element
     * @param separators the characters that may precede a name at the end of {@code path}
     * @return whether {@link #nameMatches(String, String, char...)} holds for one of {@code names}
     * @throws NullPointerException if an argument or a name is {@code null}
     */
    public static boolean anyNameMatches(String path, Collection<String> names, char... separators) {
        Objects.requireNonNull(names, "names must not be null");
        for (String n : names) {
            if (nameMatches(path, n, separators)) {
                return true;
            }
        }
        return false;
    }

    /**
     * PEFT's rule for a regex string: it must match the whole path.
     *
     * @param path  a module path; not {@code null}
     * @param regex the pattern; not {@code null}
     * @return whether {@code regex} matches all of {@code path} ({@code re.fullmatch})
     * @throws NullPointerException if an argument is {@code null}
     */
    public static boolean regexMatches(String path, Pattern regex) {
        Objects.requireNonNull(path, "path must not be null");
        Objects.requireNonNull(regex, "regex must not be null");
        return regex.matcher(path).matches();
    }
}
